#include <stdio.h>
int main(void) { puts("blockvault: not built yet"); return 1; }
