/* See log.h. */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "log.h"

static enum bv_log_level min_level = BV_LOG_INFO;   /* set once at start-up */

void bv_log_set_level(enum bv_log_level lvl)
{
    min_level = lvl;
}

void bv_log(enum bv_log_level lvl, const char *fmt, ...)
{
    static const char *const names[] = { "debug", "info", "warn", "error" };
    if (lvl < min_level)
        return;
    char msg[1024], ts[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s blockvault %s: %s\n", ts, names[lvl], msg);
}
