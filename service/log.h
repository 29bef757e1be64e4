/* Logging to stderr: one line per call, with time and level.  Thread-safe
 * (one fprintf per line).  The service is the only part that logs. */
#ifndef BV_SERVICE_LOG_H
#define BV_SERVICE_LOG_H

enum bv_log_level { BV_LOG_DEBUG, BV_LOG_INFO, BV_LOG_WARN, BV_LOG_ERROR };

void bv_log_set_level(enum bv_log_level lvl);
void bv_log(enum bv_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) bv_log(BV_LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  bv_log(BV_LOG_INFO, __VA_ARGS__)
#define log_warn(...)  bv_log(BV_LOG_WARN, __VA_ARGS__)
#define log_error(...) bv_log(BV_LOG_ERROR, __VA_ARGS__)

#endif
