#ifndef HIREDISKIT_CHIREDIS_SHIM_H
#define HIREDISKIT_CHIREDIS_SHIM_H

/* hiredis 0.14 (Debian/Ubuntu libhiredis-dev) and 1.x (Homebrew, newer distros) both
 * install these headers under <hiredis/...>; pkg-config adds -I.../hiredis as well. */
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#endif
