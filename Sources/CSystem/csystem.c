#define _GNU_SOURCE
#include "csystem.h"
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int vt_memfd_create(const char *name) {
#ifdef MFD_CLOEXEC
    return memfd_create(name, MFD_CLOEXEC);
#else
    return (int)syscall(SYS_memfd_create, name, 1u);
#endif
}

int vt_punch_hole(int fd, off_t offset, off_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

int vt_set_thread_name(pthread_t thread, const char *name) {
    char shortName[16];
    strncpy(shortName, name, sizeof shortName - 1);
    shortName[sizeof shortName - 1] = 0;
    return pthread_setname_np(thread, shortName);
}

#include <stdio.h>
void vt_line_buffer_stdout(void) { setvbuf(stdout, NULL, _IOLBF, 0); }
