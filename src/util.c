/*
 * util.c - small helpers shared by the cold paths: bounded formatting and time.
 *
 * ef_fmt() never overruns and returns what it really wrote (snprintf returns
 * what it wanted to write, which makes chained appends overflow).  The RFC 3339
 * conversion is done by hand so that the report path needs no timezone data and
 * takes no libc lock (gmtime_r is fine too, but this is ten lines).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

#include "ef.h"

size_t ef_fmt(char *buf, size_t len, const char *fmt, ...)
{
    if (!len)
        return 0;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    if (n < 0) {
        buf[0] = 0;
        return 0;
    }
    return (size_t)n < len ? (size_t)n : len - 1;
}

uint64_t ef_realtime_ns(void)
{
    /* gettimeofday (the vDSO, GLIBC_2.2.5): clock_gettime is GLIBC_2.17, one
     * more symbol version for every exec'd process to check (bench/RESULTS.md,
     * start-up); reports print microseconds */
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000000ull + (uint64_t)tv.tv_usec * 1000ull;
}

/* Howard Hinnant's civil_from_days. */
static void civil(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t yy = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yy + (*m <= 2));
}

void ef_rfc3339(uint64_t ns, char *buf, size_t len)
{
    int64_t secs = (int64_t)(ns / 1000000000ull);
    unsigned us = (unsigned)((ns % 1000000000ull) / 1000);
    int64_t days = secs / 86400;
    int64_t rem = secs % 86400;
    int y;
    unsigned m, d;
    civil(days, &y, &m, &d);
    ef_fmt(buf, len, "%04d-%02u-%02uT%02u:%02u:%02u.%06uZ", y, m, d, (unsigned)(rem / 3600),
           (unsigned)(rem / 60 % 60), (unsigned)(rem % 60), us);
}
