#include "textflag.h"

// func prefetchFrames(base unsafe.Pointer, descs []Desc, metaLen uint64)
//
// For each descriptor, PREFETCHT0 the line holding the metadata (metaLen
// bytes before the packet) and the line holding the packet's first byte.
// A prefetch never faults, whatever the address.
TEXT ·prefetchFrames(SB), NOSPLIT, $0-40
	MOVQ base+0(FP), AX
	MOVQ descs_base+8(FP), BX
	MOVQ descs_len+16(FP), CX
	MOVQ metaLen+32(FP), DX
	TESTQ CX, CX
	JEQ done
loop:
	MOVQ 0(BX), SI // Desc.Addr
	ADDQ AX, SI
	MOVQ SI, DI
	SUBQ DX, DI
	PREFETCHT0 (DI)
	PREFETCHT0 (SI)
	ADDQ $16, BX // sizeof(Desc)
	DECQ CX
	JNE loop
done:
	RET
