/*
 * epollfork.h - the public face of the epollfork shim.
 *
 * epollfork is loaded with LD_PRELOAD into unmodified programs and reports
 * epoll interest lists that are changed by one process while another process
 * that shares them through fork() relies on them.  Programs do not need this
 * header; it exists for the few that want to ask the shim something or, later,
 * annotate deliberate sharing.  Every function here is declared weak so that a
 * program can call it whether or not the shim is loaded: test the address
 * first (`if (epollfork_version) ...`).
 */
#ifndef EPOLLFORK_H
#define EPOLLFORK_H

#ifdef __cplusplus
extern "C" {
#endif

#define EPOLLFORK_VERSION_MAJOR 0
#define EPOLLFORK_VERSION_MINOR 1
#define EPOLLFORK_VERSION_PATCH 0
#define EPOLLFORK_VERSION_STRING "0.1.0"

/* The version of the loaded shim, e.g. "0.1.0". */
__attribute__((weak)) const char *epollfork_version(void);

/* Number of reports this process has emitted so far (0 when disabled). */
__attribute__((weak)) unsigned long epollfork_report_count(void);

#ifdef __cplusplus
}
#endif

#endif /* EPOLLFORK_H */
