#define _GNU_SOURCE
#include "csystem.h"
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
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

// cgroup v2 (cpu.max: "max 100000" or "<quota> <period>") or v1 (cfs_quota_us / cfs_period_us):
// the CPUs' worth of time the group may use, rounded up; 0 when unlimited or unknown.
static int vt_cgroup_cpus(void) {
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (f) {
        char quota[32];
        long period = 0;
        int cpus = 0;
        if (fscanf(f, "%31s %ld", quota, &period) == 2 && strcmp(quota, "max") != 0 && period > 0) {
            long q = atol(quota);
            if (q > 0) cpus = (int)((q + period - 1) / period);
        }
        fclose(f);
        return cpus;
    }
    long q = -1, period = 0;
    f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "r");
    if (f) { if (fscanf(f, "%ld", &q) != 1) q = -1; fclose(f); }
    f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "r");
    if (f) { if (fscanf(f, "%ld", &period) != 1) period = 0; fclose(f); }
    return (q > 0 && period > 0) ? (int)((q + period - 1) / period) : 0;
}

int vt_available_cpus(void) {
    int n = 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
    if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int quota = vt_cgroup_cpus();
    if (quota > 0 && quota < n) n = quota;
    return n < 1 ? 1 : n;
}
