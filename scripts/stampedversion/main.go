// Command stampedversion prints the version string stamped into a plugin
// binary by `-ldflags -X github.com/tooken/vault-plugin-secrets-tooken.Version=...`,
// for any of the release platforms (ELF for linux, Mach-O for darwin):
//
//	go run ./scripts/stampedversion dist/vault-plugin-secrets-tooken_v1.2.3_darwin_arm64
//
// `make release` runs it on every binary it builds. The plugin has no
// --version flag (Vault starts it), `go version -m` omits -ldflags from a
// -trimpath build, and `strings` cannot tell where one string of the binary
// ends and the next begins; the symbol table can. It reads the Version
// variable's string header (pointer, length) from the binary's data, then the
// bytes it points at, so the binary must keep its symbol table (no -s).
package main

import (
	"debug/elf"
	"debug/macho"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// versionSymbol is the variable the release build stamps.
const versionSymbol = "github.com/tooken/vault-plugin-secrets-tooken.Version"

// maxVersionLen bounds what is read, in case the header is not what it seems.
const maxVersionLen = 256

// section is a loaded part of the binary at a virtual address.
type section struct {
	addr, size uint64
	r          io.ReaderAt
}

// image is what the reader needs of an executable: its sections, the address
// of one symbol and the byte order of its pointers (64-bit platforms only).
type image struct {
	sections []section
	symbol   uint64
	order    binary.ByteOrder
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: stampedversion BINARY")
		os.Exit(2)
	}
	v, err := stampedVersion(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "stampedversion: %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	fmt.Println(v)
}

func stampedVersion(path string) (string, error) {
	img, err := openELF(path)
	if errors.Is(err, errNotThisFormat) {
		img, err = openMachO(path)
	}
	if err != nil {
		return "", err
	}
	hdr, err := img.read(img.symbol, 16)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", versionSymbol, err)
	}
	ptr, n := img.order.Uint64(hdr[:8]), img.order.Uint64(hdr[8:])
	if n == 0 || n > maxVersionLen {
		return "", fmt.Errorf("%s has an implausible length %d", versionSymbol, n)
	}
	b, err := img.read(ptr, n)
	if err != nil {
		return "", fmt.Errorf("reading the string of %s: %w", versionSymbol, err)
	}
	return string(b), nil
}

var errNotThisFormat = errors.New("not this executable format")

func openELF(path string) (*image, error) {
	f, err := elf.Open(path)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) {
			return nil, errNotThisFormat
		}
		return nil, err
	}
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("no symbol table (built with -s?): %w", err)
	}
	img := &image{order: f.ByteOrder}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOBITS && s.Addr != 0 {
			img.sections = append(img.sections, section{s.Addr, s.Size, s})
		}
	}
	for _, s := range syms {
		if s.Name == versionSymbol {
			img.symbol = s.Value
			return img, nil
		}
	}
	return nil, fmt.Errorf("symbol %s not found", versionSymbol)
}

func openMachO(path string) (*image, error) {
	f, err := macho.Open(path)
	var fe *macho.FormatError
	if errors.As(err, &fe) {
		return nil, errors.New("not a plugin binary: neither a linux (ELF) nor a darwin (Mach-O) executable; give a file that make release (or make build) wrote")
	}
	if err != nil {
		return nil, err
	}
	if f.Symtab == nil {
		return nil, errors.New("no symbol table (built with -s?)")
	}
	img := &image{order: f.ByteOrder}
	for _, s := range f.Sections {
		if s.Addr != 0 && s.Offset != 0 {
			img.sections = append(img.sections, section{s.Addr, s.Size, s})
		}
	}
	for _, s := range f.Symtab.Syms {
		if s.Name == versionSymbol || s.Name == "_"+versionSymbol {
			img.symbol = s.Value
			return img, nil
		}
	}
	return nil, fmt.Errorf("symbol %s not found", versionSymbol)
}

// read returns n bytes at virtual address addr.
func (img *image) read(addr, n uint64) ([]byte, error) {
	for _, s := range img.sections {
		if addr >= s.addr && addr+n <= s.addr+s.size {
			b := make([]byte, n)
			if _, err := s.r.ReadAt(b, int64(addr-s.addr)); err != nil {
				return nil, err
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("address %#x is in no section of the file", addr)
}
