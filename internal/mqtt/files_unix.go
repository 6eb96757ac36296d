//go:build unix

package mqtt

import (
	"log/slog"
	"syscall"
)

// socketLimit is want, lowered to leave reservedFiles of the process's
// file descriptors for the rest of the server.
func socketLimit(want int, log *slog.Logger) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > uint64(want+reservedFiles) {
		return want
	}
	got := max(int(lim.Cur)-reservedFiles, 64)
	log.Warn("mqtt broker: fewer connections than asked for, to keep file descriptors for the rest of the server; raise the open files limit (ulimit -n, LimitNOFILE=)",
		"max_connections", got, "asked", want, "open_files_limit", lim.Cur)
	return got
}
