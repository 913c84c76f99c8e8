package cli

import (
	"errors"
	"fmt"
	"io"
)

// Exit codes are part of the interface (README "Exit codes").
const (
	ExitOK        = 0
	ExitError     = 1
	ExitAttention = 2
	ExitStale     = 3
)

// ExitError carries an exit code other than 1. With a nil Err nothing more
// is printed: the command already said what needs attention.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// errNeedsAttention ends a command that finished but found something that
// needs attention (exit 2).
var errNeedsAttention = &exitError{code: ExitAttention}

// ExitCode maps a command's error to the process exit code, printing the
// error (if it has something to say) to errOut the way kubectl does.
func ExitCode(err error, errOut io.Writer) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(errOut, "error: %v\n", ee.err)
		}
		return ee.code
	}
	fmt.Fprintf(errOut, "error: %v\n", err)
	return ExitError
}
