// Command notecheck is a test and diagnostic tool that checks tally's signed
// notes (C2SP signed-note, e.g. tlog-checkpoint) against the reference Go
// implementation, golang.org/x/mod/sumdb/note.
//
// Verify (default): reads a signed note from stdin, verifies it with the
// verifier key given as the only argument, and on success writes the note
// text (without signatures) to stdout and exits 0.
//
//	notecheck '<name>+<hash>+<keydata>' < signed-note
//
// Sign: reads note text from stdin, signs it with the Go signer key given as
// the only argument, and writes the signed note to stdout.
//
//	notecheck -sign 'PRIVATE+KEY+<name>+<hash>+<keydata>' < text
//
// Any failure is reported on stderr with exit status 1; usage errors exit 2.
// In -sign mode the private key is passed on the command line, where other
// local users may see it: use -sign only with throwaway test keys.
//
// The tool needs nothing beyond the standard library and x/mod, so it builds
// offline in GOPATH mode against the Debian golang-golang-x-mod-dev package:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off \
//	    go run ./tools/notecheck/main.go KEY < input
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// maxInput mirrors tally's note size limit (1 MiB).
const maxInput = 1 << 20

func main() {
	sign := flag.Bool("sign", false, "sign stdin text with a PRIVATE+KEY+... signer key instead of verifying")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: notecheck VERIFIER-KEY < signed-note\n       notecheck -sign SIGNER-KEY < text\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	key := strings.TrimSpace(flag.Arg(0))

	input, err := io.ReadAll(io.LimitReader(os.Stdin, maxInput+1))
	if err != nil {
		fail(fmt.Errorf("reading stdin: %v", err))
	}
	if len(input) > maxInput {
		fail(fmt.Errorf("input exceeds %d bytes", maxInput))
	}

	if *sign {
		signer, err := note.NewSigner(key)
		if err != nil {
			fail(fmt.Errorf("signer key: %v", err))
		}
		msg, err := note.Sign(&note.Note{Text: string(input)}, signer)
		if err != nil {
			fail(fmt.Errorf("sign: %v", err))
		}
		write(msg)
		return
	}

	verifier, err := note.NewVerifier(key)
	if err != nil {
		fail(fmt.Errorf("verifier key: %v", err))
	}
	n, err := note.Open(input, note.VerifierList(verifier))
	if err != nil {
		fail(fmt.Errorf("open: %v", err))
	}
	write([]byte(n.Text))
}

func write(b []byte) {
	if _, err := os.Stdout.Write(b); err != nil {
		fail(fmt.Errorf("writing stdout: %v", err))
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "notecheck: %v\n", err)
	os.Exit(1)
}
