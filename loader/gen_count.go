package loader

// The element counter of the connection table (bpf/count.c) is a program
// of its own: it is loaded only to read a count, never attached to traffic.
//go:generate go tool bpf2go -tags linux -target bpfel -output-stem count countElems ../bpf/count.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
