/*
 * epollfork_version.h - the one place the version of epollfork is written.
 *
 * The public header, the library (epollfork_version() and the "version" field
 * of every JSON record), the launcher's --version (substituted by `make
 * install`, read from here in a source tree) and the packaging all take it
 * from these lines; tests/test_static.py checks that they agree.
 */
#ifndef EPOLLFORK_VERSION_H
#define EPOLLFORK_VERSION_H

#define EPOLLFORK_VERSION_MAJOR 0
#define EPOLLFORK_VERSION_MINOR 2
#define EPOLLFORK_VERSION_PATCH 0
#define EPOLLFORK_VERSION_STRING "0.2.0"

#endif /* EPOLLFORK_VERSION_H */
