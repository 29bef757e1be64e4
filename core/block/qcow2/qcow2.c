/* temporary stub, replaced by the qcow2 driver */
#include "block/driver.h"
#include <errno.h>
static int q_open(bv_node *n, int fd, bv_error **errp)
{
    return bv_error_setf(errp, ENOTSUP, "qcow2 not implemented yet");
}
const struct bv_driver bv_drv_qcow2 = { .name = "qcow2", .kind = BV_DRV_FORMAT,
                                         .format = BV_FMT_QCOW2, .open = q_open };
int bv_qcow2_create(int fd, const struct bv_create_opts *o, uint64_t size, bv_error **errp)
{
    return bv_error_setf(errp, ENOTSUP, "qcow2 not implemented yet");
}
int bv_qcow2_set_backing(bv_node *n, const char *b, enum bv_format f, bv_error **errp)
{
    return bv_error_setf(errp, ENOTSUP, "qcow2 not implemented yet");
}
