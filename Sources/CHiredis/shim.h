#ifndef HIREDISKIT_CHIREDIS_SHIM_H
#define HIREDISKIT_CHIREDIS_SHIM_H

/* hiredis 0.14 (Debian/Ubuntu libhiredis-dev) and 1.x (Homebrew, newer distros) both
 * install these headers under <hiredis/...>; pkg-config adds -I.../hiredis as well. */
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <time.h>

#if defined(__linux__) && defined(__LP64__)
#define HIREDIS_KIT_HAS_PPOLL 1
/* glibc declares ppoll only under _GNU_SOURCE, which Swift's Glibc module is not built
 * with; the function is in glibc since 2.4 and in every musl. 64-bit only: on 32-bit
 * systems with a 64-bit time_t the header redirects ppoll to another symbol. */
extern int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *timeout, const sigset_t *sigmask);
#endif

/* Waits up to `nanoseconds` for `fd` to be readable (or closed, or in error).
 * Returns 1 when it is, 0 when the time ran out, -1 on error (errno set). */
static inline int hiredis_kit_wait_readable(int fd, long long nanoseconds) {
    struct pollfd descriptor = { .fd = fd, .events = POLLIN, .revents = 0 };
#if defined(HIREDIS_KIT_HAS_PPOLL)
    struct timespec limit = { .tv_sec = (time_t)(nanoseconds / 1000000000LL),
                              .tv_nsec = (long)(nanoseconds % 1000000000LL) };
    return ppoll(&descriptor, 1, &limit, NULL);
#else
    /* No ppoll (Darwin, 32-bit Linux): poll's milliseconds, rounded up. */
    return poll(&descriptor, 1, (int)((nanoseconds + 999999LL) / 1000000LL));
#endif
}

#endif
