// The instruction table: how each Zydis mnemonic is translated. Anything not
// listed is ident (re-emitted as is, memory operand through the soft TLB).

#include <array>

#include "translator/decoder.h"

namespace btvm {
namespace {

struct Row {
  ZydisMnemonic mnemonic;
  InsnClass cls;
  const char* why;  // the SDM section or the reason
};

constexpr Row kRows[] = {
    // Control transfers end a block (SDM Vol. 1 §6.3).
    {ZYDIS_MNEMONIC_JMP, InsnClass::kBranch, "Vol.2 JMP: near jumps; far jumps go to the runtime"},
    {ZYDIS_MNEMONIC_JB, InsnClass::kBranch, "Vol.2 Jcc"},
    {ZYDIS_MNEMONIC_JBE, InsnClass::kBranch, "Vol.2 Jcc"},
    {ZYDIS_MNEMONIC_JL, InsnClass::kBranch, "Vol.2 Jcc"},
    {ZYDIS_MNEMONIC_JLE, InsnClass::kBranch, "Vol.2 Jcc"},
    {ZYDIS_MNEMONIC_JNB, InsnClass::kBranch, "Vol.2 Jcc"},
    {ZYDIS_MNEMONIC_JNBE, InsnClass::kBranch, "Vol.2 Jcc"},
    {ZYDIS_MNEMONIC_JNL, InsnClass::kBranch, "Vol.2 Jcc"},
    {ZYDIS_MNEMONIC_JNLE, InsnClass::kBranch, "Vol.2 Jcc"},
    {ZYDIS_MNEMONIC_JNO, InsnClass::kBranch, "Vol.2 Jcc"},
    {ZYDIS_MNEMONIC_JNP, InsnClass::kBranch, "Vol.2 Jcc"},
    {ZYDIS_MNEMONIC_JNS, InsnClass::kBranch, "Vol.2 Jcc"},
    {ZYDIS_MNEMONIC_JNZ, InsnClass::kBranch, "Vol.2 Jcc"},
    {ZYDIS_MNEMONIC_JO, InsnClass::kBranch, "Vol.2 Jcc"},
    {ZYDIS_MNEMONIC_JP, InsnClass::kBranch, "Vol.2 Jcc"},
    {ZYDIS_MNEMONIC_JS, InsnClass::kBranch, "Vol.2 Jcc"},
    {ZYDIS_MNEMONIC_JZ, InsnClass::kBranch, "Vol.2 Jcc"},
    {ZYDIS_MNEMONIC_JRCXZ, InsnClass::kBranch, "Vol.2 Jcc (rCX)"},
    {ZYDIS_MNEMONIC_JECXZ, InsnClass::kBranch, "Vol.2 Jcc (ECX)"},
    {ZYDIS_MNEMONIC_LOOP, InsnClass::kBranch, "Vol.2 LOOP"},
    {ZYDIS_MNEMONIC_LOOPE, InsnClass::kBranch, "Vol.2 LOOPcc"},
    {ZYDIS_MNEMONIC_LOOPNE, InsnClass::kBranch, "Vol.2 LOOPcc"},
    {ZYDIS_MNEMONIC_CALL, InsnClass::kBranch, "Vol.2 CALL: pushes the guest return address"},
    {ZYDIS_MNEMONIC_RET, InsnClass::kBranch, "Vol.2 RET (near)"},

    // Explicit stack sequences: guest RSP is not host RSP.
    {ZYDIS_MNEMONIC_PUSH, InsnClass::kStack, "Vol.2 PUSH"},
    {ZYDIS_MNEMONIC_POP, InsnClass::kStack, "Vol.2 POP"},
    {ZYDIS_MNEMONIC_LEAVE, InsnClass::kStack, "Vol.2 LEAVE"},

    // No effect to translate.
    {ZYDIS_MNEMONIC_NOP, InsnClass::kNop, "hint nop with ModRM: no memory access"},
    {ZYDIS_MNEMONIC_PREFETCH, InsnClass::kNop, "prefetch: a hint"},
    // MPX is not in the CPU model: its encodings are hint nops there, as
    // on every CPU without MPX.
    {ZYDIS_MNEMONIC_BNDCL, InsnClass::kNop, "MPX: a nop without MPX"},
    {ZYDIS_MNEMONIC_BNDCN, InsnClass::kNop, "MPX: a nop without MPX"},
    {ZYDIS_MNEMONIC_BNDCU, InsnClass::kNop, "MPX: a nop without MPX"},
    {ZYDIS_MNEMONIC_BNDLDX, InsnClass::kNop, "MPX: a nop without MPX"},
    {ZYDIS_MNEMONIC_BNDMK, InsnClass::kNop, "MPX: a nop without MPX"},
    {ZYDIS_MNEMONIC_BNDMOV, InsnClass::kNop, "MPX: a nop without MPX"},
    {ZYDIS_MNEMONIC_BNDSTX, InsnClass::kNop, "MPX: a nop without MPX"},
    {ZYDIS_MNEMONIC_PREFETCHNTA, InsnClass::kNop, "prefetch: a hint"},
    {ZYDIS_MNEMONIC_PREFETCHT0, InsnClass::kNop, "prefetch: a hint"},
    {ZYDIS_MNEMONIC_PREFETCHT1, InsnClass::kNop, "prefetch: a hint"},
    {ZYDIS_MNEMONIC_PREFETCHT2, InsnClass::kNop, "prefetch: a hint"},
    {ZYDIS_MNEMONIC_PREFETCHW, InsnClass::kNop, "prefetch: a hint"},
    {ZYDIS_MNEMONIC_PAUSE, InsnClass::kNop, "spin-loop hint"},
    // Serializing: translated code sees its own stores to code at once (a
    // store into a translated page invalidates it), so there is nothing
    // to wait for. Exposed in CPUID so that Linux's sync_core() uses it
    // instead of an iret to itself (four runtime exits).
    {ZYDIS_MNEMONIC_SERIALIZE, InsnClass::kNop, "serializing: nothing to do in translated code"},

    // Sensitive instructions: emulated by the runtime against CpuState
    // (DESIGN.md, Translator; SDM Vol. 3 §2.8 system instructions).
    {ZYDIS_MNEMONIC_HLT, InsnClass::kRuntime, "privileged"},
    {ZYDIS_MNEMONIC_CLI, InsnClass::kRuntime, "virtual IF"},
    {ZYDIS_MNEMONIC_STI, InsnClass::kRuntime, "virtual IF, interrupt shadow"},
    {ZYDIS_MNEMONIC_PUSHFQ, InsnClass::kRuntime, "exposes virtual IF/IOPL"},
    {ZYDIS_MNEMONIC_PUSHF, InsnClass::kRuntime, "exposes virtual IF/IOPL"},
    {ZYDIS_MNEMONIC_PUSHFD, InsnClass::kRuntime, "exposes virtual IF/IOPL (compatibility mode)"},
    {ZYDIS_MNEMONIC_POPFQ, InsnClass::kRuntime, "writes virtual IF/IOPL"},
    {ZYDIS_MNEMONIC_POPF, InsnClass::kRuntime, "writes virtual IF/IOPL"},
    {ZYDIS_MNEMONIC_POPFD, InsnClass::kRuntime, "writes virtual IF/IOPL (compatibility mode)"},
    {ZYDIS_MNEMONIC_IN, InsnClass::kRuntime, "port I/O"},
    {ZYDIS_MNEMONIC_OUT, InsnClass::kRuntime, "port I/O"},
    {ZYDIS_MNEMONIC_INSB, InsnClass::kRuntime, "string port I/O"},
    {ZYDIS_MNEMONIC_INSW, InsnClass::kRuntime, "string port I/O"},
    {ZYDIS_MNEMONIC_INSD, InsnClass::kRuntime, "string port I/O"},
    {ZYDIS_MNEMONIC_OUTSB, InsnClass::kRuntime, "string port I/O"},
    {ZYDIS_MNEMONIC_OUTSW, InsnClass::kRuntime, "string port I/O"},
    {ZYDIS_MNEMONIC_OUTSD, InsnClass::kRuntime, "string port I/O"},
    {ZYDIS_MNEMONIC_LGDT, InsnClass::kRuntime, "descriptor tables"},
    {ZYDIS_MNEMONIC_LIDT, InsnClass::kRuntime, "descriptor tables"},
    {ZYDIS_MNEMONIC_SGDT, InsnClass::kRuntime, "descriptor tables"},
    {ZYDIS_MNEMONIC_SIDT, InsnClass::kRuntime, "descriptor tables"},
    {ZYDIS_MNEMONIC_LLDT, InsnClass::kRuntime, "descriptor tables"},
    {ZYDIS_MNEMONIC_SLDT, InsnClass::kRuntime, "descriptor tables"},
    {ZYDIS_MNEMONIC_LTR, InsnClass::kRuntime, "task register"},
    {ZYDIS_MNEMONIC_STR, InsnClass::kRuntime, "task register"},
    {ZYDIS_MNEMONIC_SMSW, InsnClass::kRuntime, "CR0"},
    {ZYDIS_MNEMONIC_LMSW, InsnClass::kRuntime, "CR0"},
    {ZYDIS_MNEMONIC_CLTS, InsnClass::kRuntime, "CR0.TS"},
    {ZYDIS_MNEMONIC_INVLPG, InsnClass::kRuntime, "TLB"},
    {ZYDIS_MNEMONIC_INVPCID, InsnClass::kRuntime, "TLB"},
    {ZYDIS_MNEMONIC_RDMSR, InsnClass::kRuntime, "MSRs"},
    {ZYDIS_MNEMONIC_WRMSR, InsnClass::kRuntime, "MSRs"},
    {ZYDIS_MNEMONIC_CPUID, InsnClass::kRuntime, "the virtual CPU model"},
    {ZYDIS_MNEMONIC_RDTSC, InsnClass::kRuntime, "virtual TSC"},
    {ZYDIS_MNEMONIC_RDTSCP, InsnClass::kRuntime, "virtual TSC"},
    {ZYDIS_MNEMONIC_RDPID, InsnClass::kRuntime, "TSC_AUX"},
    {ZYDIS_MNEMONIC_RDPMC, InsnClass::kRuntime, "performance counters"},
    {ZYDIS_MNEMONIC_IRETQ, InsnClass::kRuntime, "privilege change"},
    {ZYDIS_MNEMONIC_IRETD, InsnClass::kRuntime, "privilege change"},
    {ZYDIS_MNEMONIC_IRET, InsnClass::kRuntime, "privilege change"},
    {ZYDIS_MNEMONIC_SYSCALL, InsnClass::kRuntime, "privilege change"},
    {ZYDIS_MNEMONIC_SYSRET, InsnClass::kRuntime, "privilege change"},
    {ZYDIS_MNEMONIC_SYSENTER, InsnClass::kRuntime, "privilege change"},
    {ZYDIS_MNEMONIC_SYSEXIT, InsnClass::kRuntime, "privilege change"},
    {ZYDIS_MNEMONIC_SWAPGS, InsnClass::kRuntime, "GS base"},
    {ZYDIS_MNEMONIC_RDFSBASE, InsnClass::kRuntime, "FS base lives in CpuState"},
    {ZYDIS_MNEMONIC_RDGSBASE, InsnClass::kRuntime, "GS base lives in CpuState"},
    {ZYDIS_MNEMONIC_WRFSBASE, InsnClass::kRuntime, "FS base lives in CpuState"},
    {ZYDIS_MNEMONIC_WRGSBASE, InsnClass::kRuntime, "GS base lives in CpuState"},
    {ZYDIS_MNEMONIC_INT, InsnClass::kRuntime, "interrupt delivery"},
    {ZYDIS_MNEMONIC_INT1, InsnClass::kRuntime, "interrupt delivery"},
    {ZYDIS_MNEMONIC_INT3, InsnClass::kRuntime, "interrupt delivery"},
    {ZYDIS_MNEMONIC_INTO, InsnClass::kRuntime, "interrupt delivery"},
    {ZYDIS_MNEMONIC_UD0, InsnClass::kRuntime, "#UD"},
    {ZYDIS_MNEMONIC_UD1, InsnClass::kRuntime, "#UD"},
    {ZYDIS_MNEMONIC_UD2, InsnClass::kRuntime, "#UD"},
    {ZYDIS_MNEMONIC_FXSAVE, InsnClass::kRuntime, "FPU state lives in CpuState"},
    {ZYDIS_MNEMONIC_FXSAVE64, InsnClass::kRuntime, "FPU state lives in CpuState"},
    {ZYDIS_MNEMONIC_FXRSTOR, InsnClass::kRuntime, "FPU state lives in CpuState"},
    {ZYDIS_MNEMONIC_FXRSTOR64, InsnClass::kRuntime, "FPU state lives in CpuState"},
    {ZYDIS_MNEMONIC_XSAVE, InsnClass::kRuntime, "x87+SSE state lives in CpuState"},
    {ZYDIS_MNEMONIC_XSAVE64, InsnClass::kRuntime, "x87+SSE state lives in CpuState"},
    {ZYDIS_MNEMONIC_XRSTOR, InsnClass::kRuntime, "x87+SSE state lives in CpuState"},
    {ZYDIS_MNEMONIC_XRSTOR64, InsnClass::kRuntime, "x87+SSE state lives in CpuState"},
    {ZYDIS_MNEMONIC_XSAVEOPT, InsnClass::kRuntime, "not exposed: #UD"},
    {ZYDIS_MNEMONIC_XSAVEOPT64, InsnClass::kRuntime, "not exposed: #UD"},
    {ZYDIS_MNEMONIC_XSAVEC, InsnClass::kRuntime, "not exposed: #UD"},
    {ZYDIS_MNEMONIC_XSAVEC64, InsnClass::kRuntime, "not exposed: #UD"},
    {ZYDIS_MNEMONIC_XSAVES, InsnClass::kRuntime, "not exposed: #UD"},
    {ZYDIS_MNEMONIC_XSAVES64, InsnClass::kRuntime, "not exposed: #UD"},
    {ZYDIS_MNEMONIC_XRSTORS, InsnClass::kRuntime, "not exposed: #UD"},
    {ZYDIS_MNEMONIC_XRSTORS64, InsnClass::kRuntime, "not exposed: #UD"},
    {ZYDIS_MNEMONIC_XGETBV, InsnClass::kRuntime, "XCR0 lives in CpuState"},
    {ZYDIS_MNEMONIC_XSETBV, InsnClass::kRuntime, "XCR0 lives in CpuState"},
    {ZYDIS_MNEMONIC_LSS, InsnClass::kRuntime, "segment load (hidden operand)"},
    {ZYDIS_MNEMONIC_LFS, InsnClass::kRuntime, "segment load (hidden operand)"},
    {ZYDIS_MNEMONIC_LGS, InsnClass::kRuntime, "segment load (hidden operand)"},
    {ZYDIS_MNEMONIC_WBINVD, InsnClass::kRuntime, "privileged cache control"},
    {ZYDIS_MNEMONIC_INVD, InsnClass::kRuntime, "privileged cache control"},
    {ZYDIS_MNEMONIC_CLFLUSH, InsnClass::kRuntime, "cache line flush of a guest address"},
    {ZYDIS_MNEMONIC_CLFLUSHOPT, InsnClass::kRuntime, "cache line flush of a guest address"},
    {ZYDIS_MNEMONIC_ENTER, InsnClass::kRuntime, "rare nested frame"},
    {ZYDIS_MNEMONIC_LAR, InsnClass::kRuntime, "descriptor access"},
    {ZYDIS_MNEMONIC_LSL, InsnClass::kRuntime, "descriptor access"},
    {ZYDIS_MNEMONIC_VERR, InsnClass::kRuntime, "descriptor access"},
    {ZYDIS_MNEMONIC_VERW, InsnClass::kRuntime, "descriptor access"},
    {ZYDIS_MNEMONIC_MONITOR, InsnClass::kRuntime, "not exposed: #UD"},
    {ZYDIS_MNEMONIC_MWAIT, InsnClass::kRuntime, "not exposed: #UD"},
    // String instructions: emulated through the MMU (correct across pages
    // and when a fault interrupts a rep mid-way).
    {ZYDIS_MNEMONIC_MOVSB, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_MOVSW, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_MOVSD, InsnClass::kRuntime, "string (or SSE2 movsd, see ClassifyInsn)"},
    {ZYDIS_MNEMONIC_MOVSQ, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_STOSB, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_STOSW, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_STOSD, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_STOSQ, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_LODSB, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_LODSW, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_LODSD, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_LODSQ, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_CMPSB, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_CMPSW, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_CMPSD, InsnClass::kRuntime, "string (or SSE2 cmpsd, see ClassifyInsn)"},
    {ZYDIS_MNEMONIC_CMPSQ, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_SCASB, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_SCASW, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_SCASD, InsnClass::kRuntime, "string"},
    {ZYDIS_MNEMONIC_SCASQ, InsnClass::kRuntime, "string"},
    // Valid only outside 64-bit mode, so decoded only in compatibility mode
    // (SDM Vol. 2, "64-bit mode: invalid"): the 64-bit host cannot run
    // them, the runtime emulates them (or stops, naming them).
    {ZYDIS_MNEMONIC_PUSHA, InsnClass::kRuntime, "Vol.2 PUSHA: compatibility mode only"},
    {ZYDIS_MNEMONIC_PUSHAD, InsnClass::kRuntime, "Vol.2 PUSHAD: compatibility mode only"},
    {ZYDIS_MNEMONIC_POPA, InsnClass::kRuntime, "Vol.2 POPA: compatibility mode only"},
    {ZYDIS_MNEMONIC_POPAD, InsnClass::kRuntime, "Vol.2 POPAD: compatibility mode only"},
    {ZYDIS_MNEMONIC_LDS, InsnClass::kRuntime, "segment load (compatibility mode only)"},
    {ZYDIS_MNEMONIC_LES, InsnClass::kRuntime, "segment load (compatibility mode only)"},
    {ZYDIS_MNEMONIC_BOUND, InsnClass::kRuntime, "Vol.2 BOUND: #BR (compatibility mode only)"},
    {ZYDIS_MNEMONIC_ARPL, InsnClass::kRuntime, "Vol.2 ARPL (compatibility mode only)"},
    {ZYDIS_MNEMONIC_AAA, InsnClass::kRuntime, "Vol.2 BCD adjustment (compatibility mode only)"},
    {ZYDIS_MNEMONIC_AAS, InsnClass::kRuntime, "Vol.2 BCD adjustment (compatibility mode only)"},
    {ZYDIS_MNEMONIC_AAM, InsnClass::kRuntime, "Vol.2 BCD adjustment (compatibility mode only)"},
    {ZYDIS_MNEMONIC_AAD, InsnClass::kRuntime, "Vol.2 BCD adjustment (compatibility mode only)"},
    {ZYDIS_MNEMONIC_DAA, InsnClass::kRuntime, "Vol.2 BCD adjustment (compatibility mode only)"},
    {ZYDIS_MNEMONIC_DAS, InsnClass::kRuntime, "Vol.2 BCD adjustment (compatibility mode only)"},
    {ZYDIS_MNEMONIC_SALC, InsnClass::kRuntime, "AL = CF ? FFh : 0 (undocumented; compatibility mode only)"},
    {ZYDIS_MNEMONIC_JCXZ, InsnClass::kRuntime, "16-bit addressing: not emulated"},
    // div and idiv run natively: a #DE arrives as SIGFPE and becomes a
    // guest #DE at the precise RIP (translator/host_fault.cpp).
};

// Instructions outside the virtual CPU model: the decoder turns them into
// #UD. Some would be dangerous to re-emit (they change the host's RIP
// (TSX, user interrupts), its protection keys, or write where a register
// points); the rest are extensions CPUID does not expose.
constexpr ZydisMnemonic kNotInModel[] = {
    ZYDIS_MNEMONIC_WRPKRU, ZYDIS_MNEMONIC_RDPKRU, ZYDIS_MNEMONIC_XBEGIN,
    ZYDIS_MNEMONIC_XABORT, ZYDIS_MNEMONIC_XEND, ZYDIS_MNEMONIC_XTEST,
    ZYDIS_MNEMONIC_XSUSLDTRK, ZYDIS_MNEMONIC_XRESLDTRK, ZYDIS_MNEMONIC_UIRET,
    ZYDIS_MNEMONIC_SENDUIPI, ZYDIS_MNEMONIC_CLUI, ZYDIS_MNEMONIC_STUI,
    ZYDIS_MNEMONIC_TESTUI, ZYDIS_MNEMONIC_ENCLU, ZYDIS_MNEMONIC_ENCLS,
    ZYDIS_MNEMONIC_ENCLV, ZYDIS_MNEMONIC_MOVDIR64B, ZYDIS_MNEMONIC_ENQCMD,
    ZYDIS_MNEMONIC_ENQCMDS, ZYDIS_MNEMONIC_INCSSPD, ZYDIS_MNEMONIC_INCSSPQ,
    ZYDIS_MNEMONIC_RDSSPD, ZYDIS_MNEMONIC_RDSSPQ, ZYDIS_MNEMONIC_SAVEPREVSSP,
    ZYDIS_MNEMONIC_RSTORSSP, ZYDIS_MNEMONIC_WRSSD, ZYDIS_MNEMONIC_WRSSQ,
    ZYDIS_MNEMONIC_WRUSSD, ZYDIS_MNEMONIC_WRUSSQ, ZYDIS_MNEMONIC_SETSSBSY,
    ZYDIS_MNEMONIC_CLRSSBSY, ZYDIS_MNEMONIC_PCONFIG, ZYDIS_MNEMONIC_MONITORX,
    ZYDIS_MNEMONIC_MWAITX, ZYDIS_MNEMONIC_CLZERO, ZYDIS_MNEMONIC_RDPRU,
    ZYDIS_MNEMONIC_UMONITOR, ZYDIS_MNEMONIC_UMWAIT, ZYDIS_MNEMONIC_TPAUSE,
    ZYDIS_MNEMONIC_INVLPGA, ZYDIS_MNEMONIC_INVLPGB, ZYDIS_MNEMONIC_TLBSYNC,
    ZYDIS_MNEMONIC_VMRUN, ZYDIS_MNEMONIC_VMLOAD, ZYDIS_MNEMONIC_VMSAVE,
    ZYDIS_MNEMONIC_SKINIT, ZYDIS_MNEMONIC_STGI, ZYDIS_MNEMONIC_CLGI,
    ZYDIS_MNEMONIC_RMPADJUST, ZYDIS_MNEMONIC_PSMASH, ZYDIS_MNEMONIC_PVALIDATE,
    ZYDIS_MNEMONIC_RMPUPDATE, ZYDIS_MNEMONIC_LOADIWKEY, ZYDIS_MNEMONIC_GETSEC,
};

constexpr auto BuildTable() {
  std::array<InsnClass, ZYDIS_MNEMONIC_MAX_VALUE + 1> t{};
  for (auto& c : t) c = InsnClass::kIdent;
  for (const Row& r : kRows) t[r.mnemonic] = r.cls;
  for (ZydisMnemonic m : kNotInModel) t[m] = InsnClass::kUndefined;
  return t;
}
constexpr auto kTable = BuildTable();

}  // namespace

InsnClass ClassifyInsn(const ZydisDecodedInstruction& insn, const ZydisDecodedOperand* ops) {
  InsnClass c = kTable[insn.mnemonic];
  // Anything else that moves RIP would be re-emitted with a host-relative
  // target: the tables above must know every branch, so an unknown one is
  // refused rather than copied.
  if (c == InsnClass::kIdent || c == InsnClass::kNop) {
    if (insn.meta.branch_type != ZYDIS_BRANCH_TYPE_NONE) return InsnClass::kUndefined;
    for (unsigned i = 0; i < insn.operand_count; ++i) {
      const ZydisDecodedOperand& op = ops[i];
      bool rip_written = op.type == ZYDIS_OPERAND_TYPE_REGISTER &&
                         op.reg.value == ZYDIS_REGISTER_RIP &&
                         (op.actions & ZYDIS_OPERAND_ACTION_MASK_WRITE);
      bool relative_imm = op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE && op.imm.is_relative;
      if (rip_written || relative_imm) return InsnClass::kUndefined;
    }
  }
  // Any explicit segment, control or debug register operand (mov to/from
  // CRn, DRn or Sreg; push/pop of a segment register) is sensitive.
  for (unsigned i = 0; i < insn.operand_count_visible; ++i) {
    if (ops[i].type != ZYDIS_OPERAND_TYPE_REGISTER) continue;
    ZydisRegisterClass rc = ZydisRegisterGetClass(ops[i].reg.value);
    if (rc == ZYDIS_REGCLASS_SEGMENT || rc == ZYDIS_REGCLASS_CONTROL ||
        rc == ZYDIS_REGCLASS_DEBUG) {
      return InsnClass::kRuntime;
    }
  }
  // Far forms of jmp/call load CS: the runtime does them.
  if ((insn.mnemonic == ZYDIS_MNEMONIC_JMP || insn.mnemonic == ZYDIS_MNEMONIC_CALL ||
       insn.mnemonic == ZYDIS_MNEMONIC_RET) &&
      insn.meta.branch_type == ZYDIS_BRANCH_TYPE_FAR) {
    return InsnClass::kRuntime;
  }
  // push/pop with a memory operand make two memory accesses: the runtime
  // does them in order (SDM Vol. 2 POP: the address uses the new RSP),
  // but for a 64-bit push in 64-bit mode, which translates to a load and
  // a push (emit_stack.cpp; Linux's entry and exit code has several).
  if ((insn.mnemonic == ZYDIS_MNEMONIC_PUSH || insn.mnemonic == ZYDIS_MNEMONIC_POP) &&
      ops[0].type == ZYDIS_OPERAND_TYPE_MEMORY &&
      !(insn.mnemonic == ZYDIS_MNEMONIC_PUSH && insn.operand_width == 64 &&
        insn.machine_mode == ZYDIS_MACHINE_MODE_LONG_64)) {
    return InsnClass::kRuntime;
  }
  // Compatibility mode: 16-bit addressing (the 67h prefix) has no 64-bit
  // host form, nor has a near branch with a 16-bit operand size (IP wraps
  // at 64 KiB): the runtime reports them.
  if (insn.machine_mode == ZYDIS_MACHINE_MODE_LONG_COMPAT_32) {
    bool memory = false;
    for (unsigned i = 0; i < insn.operand_count; ++i) {
      memory |= ops[i].type == ZYDIS_OPERAND_TYPE_MEMORY;
    }
    bool counts_cx = insn.mnemonic == ZYDIS_MNEMONIC_LOOP ||
                     insn.mnemonic == ZYDIS_MNEMONIC_LOOPE ||
                     insn.mnemonic == ZYDIS_MNEMONIC_LOOPNE;
    if (insn.address_width == 16 && (memory || counts_cx)) return InsnClass::kRuntime;
    if (c == InsnClass::kBranch && insn.operand_width == 16) return InsnClass::kRuntime;
  }
  // movsd/cmpsd are also SSE2 instructions with the same mnemonic.
  if ((insn.mnemonic == ZYDIS_MNEMONIC_MOVSD || insn.mnemonic == ZYDIS_MNEMONIC_CMPSD) &&
      insn.meta.category != ZYDIS_CATEGORY_STRINGOP) {
    return InsnClass::kIdent;
  }
  // movs, stos and lods with 64-bit addresses run in translated code
  // through a helper (emit_string.cpp); the rest of the string family, and
  // 32-bit addressing, stay with the runtime.
  if (c == InsnClass::kRuntime && insn.address_width == 64 &&
      insn.meta.category == ZYDIS_CATEGORY_STRINGOP) {
    switch (insn.mnemonic) {
      case ZYDIS_MNEMONIC_MOVSB: case ZYDIS_MNEMONIC_MOVSW: case ZYDIS_MNEMONIC_MOVSD:
      case ZYDIS_MNEMONIC_MOVSQ: case ZYDIS_MNEMONIC_STOSB: case ZYDIS_MNEMONIC_STOSW:
      case ZYDIS_MNEMONIC_STOSD: case ZYDIS_MNEMONIC_STOSQ: case ZYDIS_MNEMONIC_LODSB:
      case ZYDIS_MNEMONIC_LODSW: case ZYDIS_MNEMONIC_LODSD: case ZYDIS_MNEMONIC_LODSQ:
        return InsnClass::kString;
      default: break;
    }
  }
  return c;
}

}  // namespace btvm
