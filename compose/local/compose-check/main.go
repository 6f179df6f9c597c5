// compose-check loads compose files as Docker Compose does (compose-go: the Compose
// specification's JSON schema, interpolation, merging) and prints the project's services,
// or what is wrong, exiting 1.
//
// Usage: compose-check FILE...
package main

import (
	"context"
	"fmt"
	"os"
	"sort"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-check FILE...")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions(os.Args[1:], cli.WithOsEnv, cli.WithDotEnv)
	if err == nil {
		var project interface{ ServiceNames() []string }
		project, err = options.LoadProject(context.Background())
		if err == nil {
			names := project.ServiceNames()
			sort.Strings(names)
			for _, name := range names {
				fmt.Println(name)
			}
			return
		}
	}
	fmt.Fprintln(os.Stderr, "compose-check:", err)
	os.Exit(1)
}
