// Command fota is the EcoWatt firmware-over-the-air tool: keys, release
// bundles, the update server and the device agent, in one binary.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ecowatt/fota/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
