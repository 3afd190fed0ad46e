"""Syscall families that the host kernel runs for the app on the host-process
platforms and that the Sentry runs itself where it owns the app's address
space, threads and signals (kvm): memory, processes and threads, signals,
time.  Each module registers only when ``table.sentry_owned``."""
