// Command kubectl-meshmigrate is the kubectl plugin `kubectl meshmigrate`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	code := cli.ExitCode(cli.NewRootCommand(streams).ExecuteContext(ctx), streams.ErrOut)
	stop()
	os.Exit(code)
}
