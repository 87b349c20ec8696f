package fastpath

import "syscall"

const syscallSIGQUIT = syscall.SIGQUIT
