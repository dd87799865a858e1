package child

import "syscall"

// childAttr makes the kernel kill a child if this process dies without
// cleaning up (a SIGKILL, a crash).
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
