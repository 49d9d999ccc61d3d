// Package progs holds the benchmark's own BPF programs (never the
// product's): C sources beside their committed bpf2go output.
package progs

//go:generate go tool bpf2go -tags linux -target bpfel -output-stem floor floor floor.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
