#include "translator/host_fault.h"

#include <signal.h>
#include <ucontext.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "base/counters.h"

namespace btvm {

namespace {

thread_local BtContext* t_ctx = nullptr;
thread_local const CodeCache* t_cache = nullptr;

// ucontext register slots in x86 encoding order (rax, rcx, ... r15).
constexpr int kGregOf[16] = {REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP,
                             REG_RSI, REG_RDI, REG_R8,  REG_R9,  REG_R10, REG_R11,
                             REG_R12, REG_R13, REG_R14, REG_R15};

struct sigaction g_previous[32];

void Reraise(int sig, siginfo_t* info, void* uc) {
  const struct sigaction& prev = g_previous[sig];
  if (prev.sa_flags & SA_SIGINFO) {
    if (prev.sa_sigaction) {
      prev.sa_sigaction(sig, info, uc);
      return;
    }
  } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
    prev.sa_handler(sig);
    return;
  }
  signal(sig, SIG_DFL);  // returning re-executes the fault and dies with it
}

// Whether the host instruction at pc is an x87 one (D8-DF, or fwait),
// after its prefixes.
bool IsX87At(const uint8_t* pc) {
  for (int i = 0; i < 15; ++i) {
    uint8_t b = pc[i];
    bool prefix = b == 0x66 || b == 0x67 || b == 0xf2 || b == 0xf3 || b == 0x2e || b == 0x36 ||
                  b == 0x3e || b == 0x26 || b == 0x64 || b == 0x65 || (b >= 0x40 && b <= 0x4f);
    if (!prefix) return (b >= 0xd8 && b <= 0xdf) || b == 0x9b;
  }
  return false;
}

// The guest exception a host signal stands for, or false if it is not one
// an ident-translated instruction can raise (then it is a monitor bug).
bool GuestExceptionFor(int sig, const siginfo_t* info, const CpuState& cpu, const uint8_t* pc,
                       GuestException* e) {
  switch (sig) {
    case SIGFPE:
      if (info->si_code == FPE_INTDIV || info->si_code == FPE_INTOVF) {
        *e = {kDE, false, 0, 0};
        return true;
      }
      // x87 reports through #MF; SIMD floating point (SDM Vol. 3 §6.15,
      // #XM) is #UD unless the OS said it handles #XM.
      if (IsX87At(pc)) {
        *e = {kMF, false, 0, 0};
        return true;
      }
      if (info->si_code >= FPE_FLTDIV && info->si_code <= FPE_FLTSUB) {
        *e = (cpu.cr4 & cr4::kOSXMMEXCPT) ? GuestException{kXM, false, 0, 0}
                                          : GuestException::Ud();
        return true;
      }
      *e = {kMF, false, 0, 0};
      return true;
    case SIGSEGV:
      // #GP (a misaligned SSE operand) arrives as SI_KERNEL; page faults
      // cannot happen on guest RAM, so those are ours.
      if (info->si_code != SI_KERNEL) return false;
      *e = GuestException::Gp(0);
      return true;
    case SIGILL:
      *e = GuestException::Ud();
      return true;
    default:
      return false;
  }
}

void OnHostFault(int sig, siginfo_t* info, void* ucv) {
  auto* uc = static_cast<ucontext_t*>(ucv);
  uint64_t pc = uc->uc_mcontext.gregs[REG_RIP];
  BtContext* ctx = t_ctx;
  const CodeCache* cache = t_cache;
  const Block* b = (ctx && cache && cache->Contains(pc)) ? cache->FindByHostPc(pc) : nullptr;
  if (!b || b->insns.empty()) return Reraise(sig, info, ucv);
  uint32_t offset = static_cast<uint32_t>(pc - reinterpret_cast<uint64_t>(b->code));
  auto it = std::upper_bound(b->insns.begin(), b->insns.end(), offset,
                             [](uint32_t v, const Block::InsnRecord& r) { return v < r.host_offset; });
  if (it == b->insns.begin()) return Reraise(sig, info, ucv);
  const Block::InsnRecord& rec = *--it;
  GuestException e;
  if (rec.scratch == 0xffff) return Reraise(sig, info, ucv);
  if (rec.null_page_fault && sig == SIGSEGV && info->si_code == SEGV_MAPERR &&
      reinterpret_cast<uint64_t>(info->si_addr) < kPageSize) {
    // An access that hit the soft TLB's empty stack copy or an empty loop
    // page pair: its address was non-canonical, a #GP(0), or a #SS(0) for
    // the stack segment (SDM Vol. 3 §6.15).
    e = {rec.null_page_fault, true, 0, 0};
  } else if (!GuestExceptionFor(sig, info, ctx->cpu, reinterpret_cast<const uint8_t*>(pc), &e)) {
    return Reraise(sig, info, ucv);
  }
  // Guest registers not parked in CpuState are live in the host ones.
  for (int g = 0; g < 16; ++g) {
    if (g == kRsp || g == kR15 || (rec.scratch & (1u << g))) continue;
    ctx->cpu.gpr[g] = static_cast<uint64_t>(uc->uc_mcontext.gregs[kGregOf[g]]);
  }
  ctx->cpu.gpr[kRsp] = static_cast<uint64_t>(uc->uc_mcontext.gregs[kGregOf[kGuestRspHost]]);
  uint64_t flags = static_cast<uint64_t>(uc->uc_mcontext.gregs[REG_EFL]);
  if (rec.flags_saved) {
    // SaveArith's layout: AH as lahf left it (SF ZF AF PF CF), AL = OF.
    constexpr uint64_t kLahfFlags = rflags::kSF | rflags::kZF | rflags::kAF | rflags::kPF | rflags::kCF;
    uint16_t saved = ctx->saved_flags;
    flags = (flags & ~(kLahfFlags | rflags::kOF)) | ((saved >> 8) & kLahfFlags) |
            ((saved & 0xff) ? rflags::kOF : 0);
  }
  ctx->host_flags = flags;
  ctx->cpu.rip = rec.rip;
  ctx->exception = e;
  ctx->exit_reason = BlockExit::kException;
  if (ctx->counters) ++ctx->counters->host_faults;
  uc->uc_mcontext.gregs[REG_RIP] = static_cast<greg_t>(reinterpret_cast<uint64_t>(cache->fault_exit_stub()));
}

}  // namespace

void InstallHostFaultHandlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = OnHostFault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGFPE, SIGSEGV, SIGBUS, SIGILL}) sigaction(sig, &sa, &g_previous[sig]);
  });
}

HostFaultScope::HostFaultScope(BtContext* ctx, const CodeCache* cache)
    : saved_ctx_(t_ctx), saved_cache_(t_cache) {
  t_ctx = ctx;
  t_cache = cache;
}

HostFaultScope::~HostFaultScope() {
  t_ctx = saved_ctx_;
  t_cache = saved_cache_;
}

}  // namespace btvm
