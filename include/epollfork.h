/*
 * epollfork.h - the public face of the epollfork shim.
 *
 * epollfork is loaded with LD_PRELOAD into unmodified programs and reports
 * epoll interest lists that are changed by one process while another process
 * that shares them through fork() relies on them.  Programs do not need this
 * header; it exists for the few that want to ask the shim something or, later,
 * annotate deliberate sharing.  Every function here is declared weak so that a
 * program can call it whether or not the shim is loaded: its address is NULL
 * when the shim is absent.  The EPOLLFORK_* macros below do that test for you,
 * so `EPOLLFORK_ALLOW_SHARED(epfd);` is safe in any build and any run.
 */
#ifndef EPOLLFORK_H
#define EPOLLFORK_H

#include "epollfork_version.h" /* EPOLLFORK_VERSION_{MAJOR,MINOR,PATCH,STRING} */

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the loaded shim, e.g. "0.2.0". */
__attribute__((weak)) const char *epollfork_version(void);

/* Number of reports this process has emitted so far (0 when disabled). */
__attribute__((weak)) unsigned long epollfork_report_count(void);

/* Declare that the epoll instance behind epfd is shared across fork on
 * purpose (e.g. processes that wait on one list with EPOLLEXCLUSIVE): no
 * shared-epoll-ctl report is made for it in any process of the tree.  Returns
 * 0, or -1 when epfd is not an epoll fd the shim tracks.  errno is unchanged. */
__attribute__((weak)) int epollfork_allow_shared(int epfd);

#define EPOLLFORK_LOADED() (epollfork_version != 0)
#define EPOLLFORK_ALLOW_SHARED(epfd) (epollfork_allow_shared ? epollfork_allow_shared(epfd) : 0)
#define EPOLLFORK_REPORT_COUNT() (epollfork_report_count ? epollfork_report_count() : 0ul)

#ifdef __cplusplus
}
#endif

#endif /* EPOLLFORK_H */
