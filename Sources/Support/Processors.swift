import CLinux

/// The CPUs this process may use: its affinity mask (`taskset`, a container's cpuset), capped by
/// its cgroup's CPU quota. The default thread count of everything that computes on the CPU, so
/// that a process given one core of a machine does not start a thread per host core.
public enum Processors {
    public static var available: Int { Int(vt_available_cpus()) }
}
