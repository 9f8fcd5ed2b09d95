// Command tilecheck is a test tool that checks a tree stored as C2SP
// tlog-tiles (height 8) with the reference Go implementation,
// golang.org/x/mod/sumdb/tlog.
//
//	tilecheck DIR SIZE ROOT_HEX < requests
//
// DIR holds the tiles under their C2SP paths (tile/<L>/<N>[.p/<W>] and
// tile/entries/<N>[.p/<W>]). tilecheck reads the tree of SIZE leaves
// through tlog.TileHashReader, which checks every tile it reads against the
// root ROOT_HEX; checks that every entry in the bundles hashes to its leaf;
// then answers each request line on stdin:
//
//	inclusion INDEX     the RFC 6962 inclusion proof of leaf INDEX, checked
//	                    with tlog.CheckRecord against the entry's hash
//	consistency OLD     the consistency proof from size OLD, checked with
//	                    tlog.CheckTree against tlog.TreeHash(OLD)
//
// by printing the proof's hashes in hex on one line. Any failure is
// reported on stderr with exit status 1; usage errors exit 2.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

type dirTiles struct{ dir string }

func (t dirTiles) Height() int { return 8 }

func (t dirTiles) ReadTiles(ts []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(ts))
	for i, tl := range ts {
		// Go names a tile tile/8/L/N[.p/W]; C2SP tile/L/N[.p/W].
		p := "tile/" + strings.TrimPrefix(tl.Path(), "tile/8/")
		d, err := os.ReadFile(filepath.Join(t.dir, filepath.FromSlash(p)))
		if err != nil {
			return nil, err
		}
		out[i] = d
	}
	return out, nil
}

func (t dirTiles) SaveTiles([]tlog.Tile, [][]byte) {}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "tilecheck: "+format+"\n", args...)
	os.Exit(1)
}

func entryPath(n int64, width int64) string {
	t := tlog.Tile{H: 8, L: 0, N: n, W: int(width)}
	return "tile/entries/" + strings.TrimPrefix(t.Path(), "tile/8/0/")
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: tilecheck DIR SIZE ROOT_HEX < requests")
		os.Exit(2)
	}
	dir := os.Args[1]
	size, err := strconv.ParseInt(os.Args[2], 10, 64)
	if err != nil || size < 1 {
		fmt.Fprintln(os.Stderr, "tilecheck: SIZE must be a positive integer")
		os.Exit(2)
	}
	raw, err := hex.DecodeString(os.Args[3])
	if err != nil || len(raw) != tlog.HashSize {
		fmt.Fprintln(os.Stderr, "tilecheck: ROOT_HEX must be 32 bytes of hex")
		os.Exit(2)
	}
	var root tlog.Hash
	copy(root[:], raw)
	thr := tlog.TileHashReader(tlog.Tree{N: size, Hash: root}, dirTiles{dir})
	got, err := tlog.TreeHash(size, thr)
	if err != nil {
		fail("tree hash: %v", err)
	}
	if got != root {
		fail("the tiles give root %x, not %x", got[:], root[:])
	}
	// Every entry hashes to its leaf.
	entries := make([][]byte, 0, size)
	for n := int64(0); n*256 < size; n++ {
		width := size - n*256
		if width > 256 {
			width = 256
		}
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(entryPath(n, width))))
		if err != nil {
			fail("%v", err)
		}
		for len(b) > 0 {
			if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
				fail("bundle %d is truncated", n)
			}
			l := int(binary.BigEndian.Uint16(b))
			entries = append(entries, b[2:2+l])
			b = b[2+l:]
		}
	}
	if int64(len(entries)) != size {
		fail("the bundles hold %d entries, not %d", len(entries), size)
	}
	indexes := make([]int64, size)
	for i := range indexes {
		indexes[i] = tlog.StoredHashIndex(0, int64(i))
	}
	leaves, err := thr.ReadHashes(indexes)
	if err != nil {
		fail("leaves: %v", err)
	}
	for i, e := range entries {
		if tlog.RecordHash(e) != leaves[i] {
			fail("entry %d does not hash to its leaf", i)
		}
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) != 2 {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			fail("bad request %q", in.Text())
		}
		var proof []tlog.Hash
		switch f[0] {
		case "inclusion":
			p, err := tlog.ProveRecord(size, n, thr)
			if err != nil {
				fail("inclusion %d: %v", n, err)
			}
			if err := tlog.CheckRecord(p, size, root, n, tlog.RecordHash(entries[n])); err != nil {
				fail("inclusion %d does not check: %v", n, err)
			}
			proof = p
		case "consistency":
			old, err := tlog.TreeHash(n, thr)
			if err != nil {
				fail("tree hash %d: %v", n, err)
			}
			p, err := tlog.ProveTree(size, n, thr)
			if err != nil {
				fail("consistency %d: %v", n, err)
			}
			if err := tlog.CheckTree(p, size, root, n, old); err != nil {
				fail("consistency %d does not check: %v", n, err)
			}
			fmt.Printf("root %x ", old[:])
			proof = p
		default:
			fail("bad request %q", in.Text())
		}
		hs := make([]string, len(proof))
		for i, h := range proof {
			hs[i] = hex.EncodeToString(h[:])
		}
		fmt.Println(strings.Join(hs, " "))
	}
}
