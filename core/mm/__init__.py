"""The Sentry's memory manager, for platforms where the Sentry owns the app's
address space (kvm): guest-physical memory, page tables, VMAs."""
