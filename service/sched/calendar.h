/*
 * Proleptic Gregorian calendar arithmetic on 64-bit day numbers, shared by
 * the cron search and the TZif reader.  Day 0 is 1970-01-01 (a Thursday).
 * The conversions are Howard Hinnant's days_from_civil / civil_from_days:
 * exact for every year the scheduler accepts (1..9999) and far beyond, with
 * no table, no libc time function and no global state.
 */
#ifndef BV_SCHED_CALENDAR_H
#define BV_SCHED_CALENDAR_H

#include <stdbool.h>
#include <stdint.h>

#define CAL_DAY 86400

/* Floor division and modulo (C's / and % truncate toward zero). */
static inline int64_t cal_floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static inline int64_t cal_floormod(int64_t a, int64_t b)
{
    return a - cal_floordiv(a, b) * b;
}

static inline bool cal_is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static inline int cal_month_days(int64_t y, int m)
{
    static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    return m == 2 && cal_is_leap(y) ? 29 : days[m - 1];
}

/* Days since 1970-01-01 of y-m-d (m 1-12, d 1-31). */
static inline int64_t cal_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = cal_floordiv(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static inline void cal_civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = cal_floordiv(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* 0 = Sunday … 6 = Saturday. */
static inline int cal_weekday(int64_t days)
{
    return (int)cal_floormod(days + 4, 7);
}

#endif
