// Command gentemplate writes template.yaml, the SAM template, from the route
// table, core/resources, the directories under functions/ and the function
// settings in internal/samtemplate. Run it from the repository root (or use
// `make template`):
//
//	go run ./internal/samtemplate/gentemplate
//
// It writes the template even when its input has problems (a function
// without a directory, say), prints them, and exits with status 1;
// template_test.go reports the same problems.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/cirrus-matrix/cirrus/internal/samtemplate"
)

func main() {
	out := flag.String("o", "template.yaml", "where to write the template (- for standard output)")
	root := flag.String("root", ".", "the repository root")
	flag.Parse()
	if err := run(*root, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gentemplate:", err)
		os.Exit(1)
	}
}

func run(root, out string) error {
	in, err := samtemplate.FromRepo(root)
	if err != nil {
		return err
	}
	res, err := samtemplate.Generate(in)
	if err != nil {
		return err
	}
	if out == "-" {
		_, err = os.Stdout.Write(res.YAML)
	} else {
		err = samtemplate.WriteFile(out, res.YAML)
	}
	if err != nil {
		return err
	}
	for _, n := range res.Notes {
		fmt.Fprintln(os.Stderr, "gentemplate: note:", n)
	}
	for _, p := range res.Problems {
		fmt.Fprintln(os.Stderr, "gentemplate: problem:", p)
	}
	if len(res.Problems) > 0 {
		return fmt.Errorf("wrote %s, but its input has %d problem(s), listed above", out, len(res.Problems))
	}
	return nil
}
