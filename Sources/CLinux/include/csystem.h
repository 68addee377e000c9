// Linux calls Swift's Glibc module does not import (they need _GNU_SOURCE or are variadic):
// memfd_create and hole punching, used by the host memory backend.
#ifndef VTENSOR_CSYSTEM_H
#define VTENSOR_CSYSTEM_H

#include <stddef.h>
#include <pthread.h>
#include <sys/types.h>

/// memfd_create(name, MFD_CLOEXEC); -1 with errno on failure.
int vt_memfd_create(const char *name);
/// Frees the pages of [offset, offset+length) of a file, keeping its size (reads give zeros).
int vt_punch_hole(int fd, off_t offset, off_t length);

/// Names a thread for debuggers and top (truncated to Linux's 15 bytes).
int vt_set_thread_name(pthread_t thread, const char *name);

/// Makes standard output line-buffered, so a log redirected to a file keeps every finished
/// line even when the process traps (Swift's `stdout` global is not concurrency-safe to touch).
void vt_line_buffer_stdout(void);

/// CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota (v2 or v1),
/// at least 1. Not the host's core count.
int vt_available_cpus(void);

#endif
