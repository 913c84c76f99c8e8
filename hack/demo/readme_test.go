package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The README says how long `make demo` takes, both cold (the control plane
// is built from source) and warm (it is cached), as measured: a single
// figure misled a new user whose cold run took half as long again.
func TestReadmeStatesColdAndWarmDemoTimes(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	// The paragraph before the code block that runs make demo.
	i := strings.Index(readme, "\n\n```sh\nmake demo")
	if i < 0 {
		t.Fatal("README has no code block that runs make demo")
	}
	start := strings.LastIndex(readme[:i], "\n\n") + 2
	para := strings.Join(strings.Fields(readme[start:i]), " ")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`about \d+ minutes? cold \(measured on a \d+-core machine\)`),
		regexp.MustCompile(`about \d+ minutes? warm`),
	} {
		if !want.MatchString(para) {
			t.Errorf("the make demo paragraph of README.md lacks %q:\n%s", want, para)
		}
	}
}
