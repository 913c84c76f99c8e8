package cli

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// Set by the linker (-ldflags "-X ...cli.version=v1.2.3"): see Makefile and
// .goreleaser.yaml.
var (
	version = "dev"
	commit  = "none"
	date    = "unknown"
)

// VersionInfo is what `version -o json` prints.
type VersionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Date      string `json:"date"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// NewCmdVersion builds `kubectl meshmigrate version`.
func NewCmdVersion(streams genericiooptions.IOStreams) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := VersionInfo{Version: version, Commit: commit, Date: date, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
			switch output {
			case "":
				_, err := fmt.Fprintf(streams.Out, "kubectl-meshmigrate %s (commit %s, built %s, %s, %s)\n", info.Version, info.Commit, info.Date, info.GoVersion, info.Platform)
				return err
			case "json":
				return printObject(streams.Out, &info, "json")
			default:
				return checkOutput(output, "", "json")
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "Output format: json")
	_ = cmd.RegisterFlagCompletionFunc("output", fixedCompletion("json"))
	return cmd
}
