#include "runtime/kvm/kvm_engine.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <x86intrin.h>

#include <algorithm>
#include <cstddef>
#include <cerrno>
#include <cstring>
#include <vector>

#include "base/format.h"
#include "devices/clock.h"

namespace btvm {
namespace {

// <linux/kvm.h> ends kvm_cpuid2, kvm_msrs and kvm_xsave in a flexible
// array declared through an empty struct, which C++ gives a size: their
// sizeof (encoded in the ioctl numbers) and the offset of their entries
// differ from the kernel's C layout. These ioctls are spelled here with
// the C sizes, and their buffers laid out by hand: an 8-byte header
// (count, padding), then the entries.
constexpr unsigned long kGetSupportedCpuid = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, 8);
constexpr unsigned long kSetCpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, 8);
constexpr unsigned long kGetMsrs = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x88, 8);
constexpr unsigned long kSetMsrs = _IOC(_IOC_WRITE, KVMIO, 0x89, 8);
constexpr unsigned long kGetXsave = _IOC(_IOC_READ, KVMIO, 0xa4, 4096);
constexpr unsigned long kSetXsave = _IOC(_IOC_WRITE, KVMIO, 0xa5, 4096);
constexpr size_t kListHeader = 8;
static_assert(sizeof(kvm_cpuid_entry2) == 40 && sizeof(kvm_msr_entry) == 16);

// The kick: the timer thread signals the vCPU thread, whose handler makes
// a KVM_RUN in progress (or about to start) return at once.
constexpr int kKickSignal = SIGUSR1;
thread_local kvm_run* tls_run = nullptr;

void OnKick(int) {
  if (tls_run) tls_run->immediate_exit = 1;
}

Error Errno(const std::string& what) {
  return MakeError("kvm engine: " + what + ": " + std::strerror(errno));
}

// MSRs kept in CpuState that KVM holds while the guest runs.
struct MsrSlot {
  uint32_t index;
  uint64_t MsrState::*field;
  bool required;  // KVM must take it (the others: if the virtual CPU has them)
};
constexpr uint32_t kMsrTsc = 0x10;
constexpr MsrSlot kMsrs[] = {
    {0xc0000081, &MsrState::star, true},         {0xc0000082, &MsrState::lstar, true},
    {0xc0000083, &MsrState::cstar, true},        {0xc0000084, &MsrState::fmask, true},
    {0xc0000102, &MsrState::kernel_gs_base, true}, {0x174, &MsrState::sysenter_cs, true},
    {0x175, &MsrState::sysenter_esp, true},      {0x176, &MsrState::sysenter_eip, true},
    {0x277, &MsrState::pat, true},               {0xc0000103, &MsrState::tsc_aux, false},
};

// The MSRs the machine implements (its local APIC's): KVM hands them here.
constexpr uint32_t kMachineMsrs[] = {0x1b /* IA32_APIC_BASE */, 0x6e0 /* IA32_TSC_DEADLINE */};

kvm_segment ToKvm(const SegmentReg& s) {
  kvm_segment k{};
  k.base = s.base;
  k.limit = s.limit;
  k.selector = s.selector;
  k.type = s.attrib & 0xf;
  k.s = (s.attrib >> 4) & 1;
  k.dpl = (s.attrib >> 5) & 3;
  k.present = (s.attrib >> 7) & 1;
  k.avl = (s.attrib >> 12) & 1;
  k.l = (s.attrib >> 13) & 1;
  k.db = (s.attrib >> 14) & 1;
  k.g = (s.attrib >> 15) & 1;
  k.unusable = !k.present;
  return k;
}

SegmentReg FromKvm(const kvm_segment& k) {
  SegmentReg s;
  s.base = k.base;
  s.limit = k.limit;
  s.selector = k.selector;
  if (k.unusable && !k.present) {
    s.attrib = 0;
    return s;
  }
  s.attrib = static_cast<uint16_t>((k.type & 0xf) | (k.s << 4) | (k.dpl << 5) | (k.present << 7) |
                                   (k.avl << 12) | (k.l << 13) | (k.db << 14) | (k.g << 15));
  return s;
}

// KVM's GPR layout against x86 encoding order.
__u64* KvmGpr(kvm_regs& r, int i) {
  __u64* const order[kGprCount] = {&r.rax, &r.rcx, &r.rdx, &r.rbx, &r.rsp, &r.rbp,
                                      &r.rsi, &r.rdi, &r.r8,  &r.r9,  &r.r10, &r.r11,
                                      &r.r12, &r.r13, &r.r14, &r.r15};
  return order[i];
}

// kvm_msrs with one entry, in the kernel's layout.
struct OneMsr {
  uint32_t nmsrs = 1, pad = 0;
  kvm_msr_entry entry{};
};
static_assert(offsetof(OneMsr, entry) == kListHeader);

bool GetMsr(int vcpu, uint32_t index, uint64_t* value) {
  OneMsr m;
  m.entry.index = index;
  if (ioctl(vcpu, kGetMsrs, &m) != 1) return false;
  *value = m.entry.data;
  return true;
}

bool SetMsr(int vcpu, uint32_t index, uint64_t value) {
  OneMsr m;
  m.entry.index = index;
  m.entry.data = value;
  return ioctl(vcpu, kSetMsrs, &m) == 1;
}

// kvm_cpuid2 in the kernel's layout: the count, then the entries.
struct CpuidList {
  std::vector<uint8_t> bytes;
  explicit CpuidList(uint32_t n) : bytes(kListHeader + n * sizeof(kvm_cpuid_entry2)) {
    std::memcpy(bytes.data(), &n, 4);
  }
  uint32_t count() const {
    uint32_t n;
    std::memcpy(&n, bytes.data(), 4);
    return n;
  }
  kvm_cpuid_entry2* entries() {
    return reinterpret_cast<kvm_cpuid_entry2*>(bytes.data() + kListHeader);
  }
};

// A VM with `bytes` of RAM at 0 and one vCPU, for the probe.
struct ProbeVm {
  int kvm = -1, vm = -1, vcpu = -1;
  uint8_t* mem = nullptr;
  size_t bytes = 0;
  kvm_run* run = nullptr;
  size_t run_size = 0;
  ~ProbeVm() {
    if (run) munmap(run, run_size);
    if (mem) munmap(mem, bytes);
    for (int fd : {vcpu, vm, kvm}) {
      if (fd >= 0) close(fd);
    }
  }
};

Status OpenKvm(int* fd) {
  *fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (*fd < 0) return Errno("cannot open /dev/kvm");
  const int version = ioctl(*fd, KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    return MakeError("kvm engine: /dev/kvm speaks API version " + std::to_string(version) +
                     ", not " + std::to_string(KVM_API_VERSION));
  }
  return Ok{};
}

// vCPU 0 of `vm` and its kvm_run mapping.
Status CreateVcpu(int kvm, int vm, int* vcpu, kvm_run** run, size_t* run_size) {
  *vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (*vcpu < 0) return Errno("KVM_CREATE_VCPU");
  const int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (size <= 0) return Errno("KVM_GET_VCPU_MMAP_SIZE");
  void* mapped = mmap(nullptr, static_cast<size_t>(size), PROT_READ | PROT_WRITE, MAP_SHARED,
                      *vcpu, 0);
  if (mapped == MAP_FAILED) return Errno("mmap of kvm_run");
  *run = static_cast<kvm_run*>(mapped);
  *run_size = static_cast<size_t>(size);
  return Ok{};
}

}  // namespace

Status KvmEngine::Probe() {
  ProbeVm p;
  if (Status s = OpenKvm(&p.kvm); !s) return s;
  p.vm = ioctl(p.kvm, KVM_CREATE_VM, 0);
  if (p.vm < 0) return Errno("KVM_CREATE_VM (no hardware virtualization?)");
  p.bytes = size_t{2} << 20;
  void* mem = mmap(nullptr, p.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return Errno("mmap");
  p.mem = static_cast<uint8_t*>(mem);
  kvm_userspace_memory_region region{0, 0, 0, p.bytes, reinterpret_cast<uint64_t>(p.mem)};
  if (ioctl(p.vm, KVM_SET_USER_MEMORY_REGION, &region) != 0) return Errno("guest memory");
  if (Status s = CreateVcpu(p.kvm, p.vm, &p.vcpu, &p.run, &p.run_size); !s) return s;

  // 64-bit kernel mode on a 2 MiB identity page: mov al, 0x42; out 0xf4, al;
  // hlt.
  static const uint8_t kCode[] = {0xb0, 0x42, 0xe6, 0xf4, 0xf4};
  std::memcpy(p.mem + 0x1000, kCode, sizeof kCode);
  auto* pml4 = reinterpret_cast<uint64_t*>(p.mem + 0x2000);
  auto* pdpt = reinterpret_cast<uint64_t*>(p.mem + 0x3000);
  auto* pd = reinterpret_cast<uint64_t*>(p.mem + 0x4000);
  pml4[0] = 0x3000 | 3;
  pdpt[0] = 0x4000 | 3;
  pd[0] = 0x83;  // 2 MiB page, writable
  kvm_sregs sregs;
  if (ioctl(p.vcpu, KVM_GET_SREGS, &sregs) != 0) return Errno("KVM_GET_SREGS");
  sregs.cr3 = 0x2000;
  sregs.cr4 = cr4::kPAE;
  sregs.cr0 = cr0::kPE | cr0::kET | cr0::kPG;
  sregs.efer = efer::kLME | efer::kLMA;
  kvm_segment code{};
  code.limit = 0xffffffff;
  code.selector = 8;
  code.present = 1;
  code.type = 11;
  code.s = 1;
  code.l = 1;
  code.g = 1;
  kvm_segment data = code;
  data.selector = 16;
  data.type = 3;
  data.l = 0;
  data.db = 1;
  sregs.cs = code;
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
  kvm_regs regs{};
  regs.rip = 0x1000;
  regs.rflags = rflags::kFixed1;
  if (ioctl(p.vcpu, KVM_SET_SREGS, &sregs) != 0) return Errno("KVM_SET_SREGS");
  if (ioctl(p.vcpu, KVM_SET_REGS, &regs) != 0) return Errno("KVM_SET_REGS");
  if (ioctl(p.vcpu, KVM_RUN, 0) != 0) return Errno("KVM_RUN");
  const uint8_t* out = reinterpret_cast<const uint8_t*>(p.run) + p.run->io.data_offset;
  if (p.run->exit_reason != KVM_EXIT_IO || p.run->io.port != 0xf4 || *out != 0x42) {
    return MakeError("kvm engine: this host's KVM did not run a 64-bit test guest (exit " +
                     std::to_string(p.run->exit_reason) + " where port output was due)");
  }
  if (ioctl(p.vcpu, KVM_RUN, 0) != 0) return Errno("KVM_RUN");
  if (p.run->exit_reason != KVM_EXIT_HLT) {
    return MakeError("kvm engine: this host's KVM did not run a 64-bit test guest (exit " +
                     std::to_string(p.run->exit_reason) + " where hlt was due)");
  }
  return Ok{};
}

KvmEngine::KvmEngine(GuestMemory& memory, PioBus& pio, MmioBus& mmio,
                     const std::atomic<bool>& stop, Counters& counters, InterruptSource* irq,
                     CpuPlatform* platform)
    : memory_(memory),
      pio_(pio),
      mmio_(mmio),
      stop_(stop),
      counters_(counters),
      irq_(irq),
      platform_(platform) {}

Result<std::unique_ptr<KvmEngine>> KvmEngine::Create(GuestMemory& memory, PioBus& pio,
                                                     MmioBus& mmio,
                                                     const std::atomic<bool>& stop,
                                                     Counters& counters, InterruptSource* irq,
                                                     CpuPlatform* platform) {
  std::unique_ptr<KvmEngine> e(new KvmEngine(memory, pio, mmio, stop, counters, irq, platform));
  if (Status s = e->Setup(); !s) return s.error();
  return e;
}

KvmEngine::~KvmEngine() {
  timer_.reset();  // no kick after this
  if (run_) munmap(run_, run_size_);
  for (int fd : {vcpu_, vm_, kvm_}) {
    if (fd >= 0) close(fd);
  }
}

Status KvmEngine::Setup() {
  if (Status s = OpenKvm(&kvm_); !s) return s;
  vm_ = ioctl(kvm_, KVM_CREATE_VM, 0);
  if (vm_ < 0) return Errno("KVM_CREATE_VM (no hardware virtualization?)");
  // Where Intel's real-mode support keeps its TSS (the top of 4 GiB, below
  // the APIC and firmware, as QEMU puts it); not every KVM needs it.
  ioctl(vm_, KVM_SET_TSS_ADDR, 0xfffbd000ul);
  uint32_t slot = 0;
  for (const RamRegion& r : memory_.regions()) {
    uint8_t* host = memory_.HostPointer(r.base, r.size);
    if (!host) return MakeError("kvm engine: guest RAM at " + Hex(r.base.value) + " has no host mapping");
    kvm_userspace_memory_region region{slot++, 0, r.base.value, r.size,
                                       reinterpret_cast<uint64_t>(host)};
    if (ioctl(vm_, KVM_SET_USER_MEMORY_REGION, &region) != 0) return Errno("guest memory");
  }
  // The APIC's MSRs are the machine's: KVM leaves them to us.
  kvm_enable_cap cap{};
  cap.cap = KVM_CAP_X86_USER_SPACE_MSR;
  cap.args[0] = KVM_MSR_EXIT_REASON_FILTER;
  if (ioctl(vm_, KVM_ENABLE_CAP, &cap) != 0) return Errno("KVM_CAP_X86_USER_SPACE_MSR");
  static uint8_t deny_one = 0;  // bitmap bit 0 clear: the one MSR exits to us
  kvm_msr_filter filter{};
  filter.flags = KVM_MSR_FILTER_DEFAULT_ALLOW;
  for (size_t i = 0; i < std::size(kMachineMsrs); ++i) {
    filter.ranges[i].flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE;
    filter.ranges[i].nmsrs = 1;
    filter.ranges[i].base = kMachineMsrs[i];
    filter.ranges[i].bitmap = &deny_one;
  }
  if (ioctl(vm_, KVM_X86_SET_MSR_FILTER, &filter) != 0) return Errno("KVM_X86_SET_MSR_FILTER");

  return CreateVcpu(kvm_, vm_, &vcpu_, &run_, &run_size_);
}

Status KvmEngine::SetCpuid(const CpuState& cpu) {
  // btvm's virtual CPU (emulate.cpp), as far as this host's KVM can give it.
  CpuidList supported(256);
  if (ioctl(kvm_, kGetSupportedCpuid, supported.bytes.data()) != 0) {
    return Errno("KVM_GET_SUPPORTED_CPUID");
  }
  const auto host = [&](uint32_t leaf, uint32_t index) -> const kvm_cpuid_entry2* {
    for (uint32_t i = 0; i < supported.count(); ++i) {
      const kvm_cpuid_entry2& e = supported.entries()[i];
      if (e.function == leaf && (!(e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e.index == index)) {
        return &e;
      }
    }
    return nullptr;
  };
  std::vector<kvm_cpuid_entry2> entries;
  const auto add = [&](uint32_t leaf, uint32_t index, bool indexed) {
    const CpuidResult r = VirtualCpuid(cpu, leaf, index);
    kvm_cpuid_entry2 e{};
    e.function = leaf;
    e.index = index;
    e.flags = indexed ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
    e.eax = r.eax;
    e.ebx = r.ebx;
    e.ecx = r.ecx;
    e.edx = r.edx;
    // Feature bits: only what KVM can give (the hypervisor bit is ours).
    if (leaf == 1 || leaf == 7 || leaf == 0x80000001) {
      const kvm_cpuid_entry2* h = host(leaf, index);
      const uint32_t keep_ecx = leaf == 1 ? (1u << 31) | (1u << 27) : 0;
      e.ebx &= h ? h->ebx : 0;
      e.ecx &= (h ? h->ecx : 0) | keep_ecx;
      e.edx &= h ? h->edx : 0;
      if (leaf == 1) e.ebx = r.ebx;  // not features: CLFLUSH size, APIC ID
    }
    entries.push_back(e);
  };
  const uint32_t max_basic = VirtualCpuid(cpu, 0, 0).eax;
  for (uint32_t leaf = 0; leaf <= max_basic; ++leaf) {
    const bool indexed = leaf == 4 || leaf == 7 || leaf == 0xb || leaf == 0xd;
    for (uint32_t index = 0; index < (indexed ? 8u : 1u); ++index) add(leaf, index, indexed);
  }
  add(0x40000000, 0, false);
  const uint32_t max_ext = VirtualCpuid(cpu, 0x80000000, 0).eax;
  for (uint32_t leaf = 0x80000000; leaf <= max_ext; ++leaf) add(leaf, 0, false);
  CpuidList cpuid(static_cast<uint32_t>(entries.size()));
  std::memcpy(cpuid.entries(), entries.data(), entries.size() * sizeof(kvm_cpuid_entry2));
  if (ioctl(vcpu_, kSetCpuid2, cpuid.bytes.data()) != 0) return Errno("KVM_SET_CPUID2");
  return Ok{};
}

Status KvmEngine::LoadState(const CpuState& cpu) {
  kvm_regs regs{};
  for (int i = 0; i < kGprCount; ++i) *KvmGpr(regs, i) = cpu.gpr[i];
  regs.rip = cpu.rip;
  regs.rflags = cpu.rflags | rflags::kFixed1;
  kvm_sregs sregs;
  if (ioctl(vcpu_, KVM_GET_SREGS, &sregs) != 0) return Errno("KVM_GET_SREGS");
  kvm_segment* const segs[kSegCount] = {&sregs.es, &sregs.cs, &sregs.ss,
                                        &sregs.ds, &sregs.fs, &sregs.gs};
  for (int i = 0; i < kSegCount; ++i) *segs[i] = ToKvm(cpu.seg[i]);
  sregs.ldt = ToKvm(cpu.ldtr);
  sregs.tr = ToKvm(cpu.tr);
  if (sregs.tr.unusable) {
    // VM entry wants a usable busy TSS; a guest that never loaded TR
    // never uses it either.
    sregs.tr = kvm_segment{};
    sregs.tr.type = 11;
    sregs.tr.present = 1;
    sregs.tr.limit = 0x67;
  }
  sregs.gdt = {cpu.gdtr.base, cpu.gdtr.limit, {}};
  sregs.idt = {cpu.idtr.base, cpu.idtr.limit, {}};
  sregs.cr0 = cpu.cr0;
  sregs.cr2 = cpu.cr2;
  sregs.cr3 = cpu.cr3;
  sregs.cr4 = cpu.cr4;
  sregs.cr8 = platform_ ? platform_->ReadCr8() : cpu.cr8;
  sregs.efer = cpu.efer;
  sregs.apic_base = cpu.msr.apic_base;
  std::memset(sregs.interrupt_bitmap, 0, sizeof sregs.interrupt_bitmap);
  if (Status s = SetCpuid(cpu); !s) return s;
  if (ioctl(vcpu_, KVM_SET_SREGS, &sregs) != 0) return Errno("KVM_SET_SREGS");
  if (ioctl(vcpu_, KVM_SET_REGS, &regs) != 0) return Errno("KVM_SET_REGS");

  kvm_xcrs xcrs{};
  xcrs.nr_xcrs = 1;
  xcrs.xcrs[0].xcr = 0;
  xcrs.xcrs[0].value = cpu.xcr0 | 1;
  if (ioctl(vcpu_, KVM_SET_XCRS, &xcrs) != 0) return Errno("KVM_SET_XCRS");
  XsaveArea xsave = cpu.xsave;  // kvm_xsave's 4,096 bytes are XsaveArea's
  // The legacy region holds x87 and SSE as the guest left them (XRSTOR
  // would take the init state for a component whose XSTATE_BV bit is 0).
  xsave.bytes[512] |= 3;
  if (ioctl(vcpu_, kSetXsave, &xsave) != 0) return Errno("KVM_SET_XSAVE");

  for (const MsrSlot& m : kMsrs) {
    if (!SetMsr(vcpu_, m.index, cpu.msr.*m.field) && m.required) {
      return MakeError("kvm engine: KVM refused MSR " + Hex(m.index));
    }
  }
  if (!SetMsr(vcpu_, kMsrTsc, GuestTsc(cpu))) return MakeError("kvm engine: KVM refused the TSC");

  kvm_debugregs debug{};
  for (int i = 0; i < 4; ++i) debug.db[i] = cpu.dr[i];
  debug.dr6 = cpu.dr[6];
  debug.dr7 = cpu.dr[7];
  if (ioctl(vcpu_, KVM_SET_DEBUGREGS, &debug) != 0) return Errno("KVM_SET_DEBUGREGS");

  kvm_vcpu_events events{};
  if (ioctl(vcpu_, KVM_GET_VCPU_EVENTS, &events) != 0) return Errno("KVM_GET_VCPU_EVENTS");
  events.flags = KVM_VCPUEVENT_VALID_SHADOW;
  events.interrupt.shadow = cpu.pending.interrupt_shadow ? KVM_X86_SHADOW_INT_MOV_SS : 0;
  events.exception.injected = cpu.pending.exception_pending;
  events.exception.nr = cpu.pending.exception_vector;
  events.exception.has_error_code = cpu.pending.has_error_code;
  events.exception.error_code = cpu.pending.error_code;
  if (ioctl(vcpu_, KVM_SET_VCPU_EVENTS, &events) != 0) return Errno("KVM_SET_VCPU_EVENTS");
  last_cr8_ = sregs.cr8;
  return Ok{};
}

Status KvmEngine::StoreState(CpuState* cpu) {
  kvm_regs regs;
  kvm_sregs sregs;
  if (ioctl(vcpu_, KVM_GET_REGS, &regs) != 0) return Errno("KVM_GET_REGS");
  if (ioctl(vcpu_, KVM_GET_SREGS, &sregs) != 0) return Errno("KVM_GET_SREGS");
  for (int i = 0; i < kGprCount; ++i) cpu->gpr[i] = *KvmGpr(regs, i);
  cpu->rip = regs.rip;
  cpu->rflags = regs.rflags;
  const kvm_segment* const segs[kSegCount] = {&sregs.es, &sregs.cs, &sregs.ss,
                                              &sregs.ds, &sregs.fs, &sregs.gs};
  for (int i = 0; i < kSegCount; ++i) cpu->seg[i] = FromKvm(*segs[i]);
  cpu->ldtr = FromKvm(sregs.ldt);
  cpu->tr = FromKvm(sregs.tr);
  cpu->gdtr.base = sregs.gdt.base;
  cpu->gdtr.limit = sregs.gdt.limit;
  cpu->idtr.base = sregs.idt.base;
  cpu->idtr.limit = sregs.idt.limit;
  cpu->cr0 = sregs.cr0;
  cpu->cr2 = sregs.cr2;
  cpu->cr3 = sregs.cr3;
  cpu->cr4 = sregs.cr4;
  cpu->cr8 = sregs.cr8;
  cpu->efer = sregs.efer;
  kvm_xcrs xcrs{};
  if (ioctl(vcpu_, KVM_GET_XCRS, &xcrs) == 0 && xcrs.nr_xcrs > 0) cpu->xcr0 = xcrs.xcrs[0].value;
  static_assert(sizeof(XsaveArea) == 4096);
  if (ioctl(vcpu_, kGetXsave, &cpu->xsave) != 0) return Errno("KVM_GET_XSAVE");
  for (const MsrSlot& m : kMsrs) {
    uint64_t v;
    if (GetMsr(vcpu_, m.index, &v)) cpu->msr.*m.field = v;
  }
  uint64_t tsc;
  if (GetMsr(vcpu_, kMsrTsc, &tsc)) cpu->msr.tsc_offset = tsc - __rdtsc();
  kvm_debugregs debug;
  if (ioctl(vcpu_, KVM_GET_DEBUGREGS, &debug) == 0) {
    for (int i = 0; i < 4; ++i) cpu->dr[i] = debug.db[i];
    cpu->dr[6] = debug.dr6;
    cpu->dr[7] = debug.dr7;
  }
  kvm_vcpu_events events;
  if (ioctl(vcpu_, KVM_GET_VCPU_EVENTS, &events) == 0) {
    cpu->pending.interrupt_shadow = events.interrupt.shadow != 0;
    cpu->pending.exception_pending = events.exception.injected;
    cpu->pending.exception_vector = events.exception.nr;
    cpu->pending.has_error_code = events.exception.has_error_code;
    cpu->pending.error_code = events.exception.error_code;
  }
  return Ok{};
}

Status KvmEngine::OfferInterrupt() {
  if (!irq_ || !irq_->InterruptPending()) {
    run_->request_interrupt_window = 0;
    return Ok{};
  }
  if (run_->ready_for_interrupt_injection && run_->if_flag) {
    kvm_interrupt interrupt{irq_->AcknowledgeInterrupt()};
    if (ioctl(vcpu_, KVM_INTERRUPT, &interrupt) != 0) return Errno("KVM_INTERRUPT");
    ++injected_;
    ++counters_.interrupts_delivered;
    ++counters_.vectors[interrupt.irq];
    // Another may wait behind it: an exit once the guest can take it.
    run_->request_interrupt_window = irq_->InterruptPending();
    return Ok{};
  }
  run_->request_interrupt_window = 1;
  return Ok{};
}

bool KvmEngine::HandleIo() {
  ++exits_io_;
  ++counters_.exits_io;
  auto* data = reinterpret_cast<uint8_t*>(run_) + run_->io.data_offset;
  const unsigned size = run_->io.size;
  for (uint32_t i = 0; i < run_->io.count; ++i, data += size) {
    if (run_->io.direction == KVM_EXIT_IO_OUT) {
      uint32_t value = 0;
      std::memcpy(&value, data, size);
      pio_.Write(run_->io.port, size, value);
    } else {
      const uint32_t value = pio_.Read(run_->io.port, size);
      std::memcpy(data, &value, size);
    }
  }
  return true;
}

bool KvmEngine::HandleMmio() {
  ++exits_mmio_;
  const GuestPhys addr{run_->mmio.phys_addr};
  const unsigned len = run_->mmio.len;
  if (run_->mmio.is_write) {
    uint64_t value = 0;
    std::memcpy(&value, run_->mmio.data, std::min<unsigned>(len, 8));
    mmio_.Write(addr, len, value);
  } else {
    const uint64_t value = mmio_.Read(addr, len);
    std::memcpy(run_->mmio.data, &value, std::min<unsigned>(len, 8));
  }
  return true;
}

bool KvmEngine::HandleMsr(bool write) {
  ++exits_msr_;
  CpuPlatform::MsrResult r = CpuPlatform::MsrResult::kNotMine;
  if (platform_) {
    uint64_t value = run_->msr.data;
    r = write ? platform_->WriteMsr(run_->msr.index, value)
              : platform_->ReadMsr(run_->msr.index, &value);
    if (!write) run_->msr.data = value;
  }
  run_->msr.error = r == CpuPlatform::MsrResult::kDone ? 0 : 1;  // 1: #GP in the guest
  return true;
}

bool KvmEngine::Halt(EngineExit* exit) {
  ++exits_hlt_;
  ++counters_.exits_hlt;
  return HaltUntilInterrupt(run_->if_flag, irq_, stop_, exit);
}

EngineExit KvmEngine::Run(CpuState& cpu) {
  EngineExit exit;
  if (Status s = LoadState(cpu); !s) return {EngineExit::kError, s.error().message};
  struct sigaction sa {};
  sa.sa_handler = OnKick;
  sigaction(kKickSignal, &sa, nullptr);
  tls_run = run_;
  vcpu_thread_ = pthread_self();
  if (!timer_) {
    timer_ = std::make_unique<DeadlineTimer>([this] { pthread_kill(vcpu_thread_, kKickSignal); });
  }

  while (!stop_.load(std::memory_order_relaxed)) {
    if (Status s = OfferInterrupt(); !s) {
      exit = {EngineExit::kError, s.error().message};
      break;
    }
    if (irq_) {
      // The next timer event, and a look at console input every 10 ms.
      // Re-armed only for a sooner kick or once the armed one is due: an
      // exit does not move the 10 ms mark (nor wake the timer thread).
      const uint64_t now = HostClock().NowNs();
      const uint64_t due = std::min(irq_->NextDeadlineNs(), now + 10'000'000);
      if (due < armed_ns_ || now >= armed_ns_) {
        timer_->Arm(due);
        armed_ns_ = due;
      }
    }
    if (platform_) {
      last_cr8_ = platform_->ReadCr8();
      run_->cr8 = last_cr8_;
    }
    const int r = ioctl(vcpu_, KVM_RUN, 0);
    const int err = errno;
    run_->immediate_exit = 0;
    if (platform_ && run_->cr8 != last_cr8_) platform_->WriteCr8(run_->cr8);
    if (r != 0) {
      if (err == EINTR || err == EAGAIN) {
        ++exits_kick_;
        continue;
      }
      errno = err;
      exit = {EngineExit::kError, Errno("KVM_RUN").message};
      break;
    }
    bool go_on = true;
    switch (run_->exit_reason) {
      case KVM_EXIT_IO: go_on = HandleIo(); break;
      case KVM_EXIT_MMIO: go_on = HandleMmio(); break;
      case KVM_EXIT_X86_RDMSR: go_on = HandleMsr(false); break;
      case KVM_EXIT_X86_WRMSR: go_on = HandleMsr(true); break;
      case KVM_EXIT_HLT: go_on = Halt(&exit); break;
      case KVM_EXIT_IRQ_WINDOW_OPEN: ++exits_window_; break;
      case KVM_EXIT_INTR: ++exits_kick_; break;
      case KVM_EXIT_SHUTDOWN: {
        kvm_regs regs{};
        ioctl(vcpu_, KVM_GET_REGS, &regs);
        exit = {EngineExit::kTripleFault, "triple fault (KVM shut the vCPU down at rip " +
                                              Hex(regs.rip) + ")"};
        go_on = false;
        break;
      }
      case KVM_EXIT_FAIL_ENTRY:
        exit = {EngineExit::kError,
                "kvm engine: KVM could not enter the guest (hardware reason " +
                    Hex(run_->fail_entry.hardware_entry_failure_reason) + ")"};
        go_on = false;
        break;
      case KVM_EXIT_INTERNAL_ERROR:
        exit = {EngineExit::kError, "kvm engine: KVM internal error " +
                                        std::to_string(run_->internal.suberror) +
                                        " (an instruction it cannot emulate?)"};
        go_on = false;
        break;
      default:
        ++exits_other_;
        exit = {EngineExit::kError,
                "kvm engine: unexpected KVM exit " + std::to_string(run_->exit_reason)};
        go_on = false;
        break;
    }
    if (!go_on) break;
  }
  if (Status s = StoreState(&cpu); !s && exit.kind == EngineExit::kStop) {
    exit = {EngineExit::kError, s.error().message};
  }
  tls_run = nullptr;
  return exit;
}

void KvmEngine::PrintStats(std::FILE* out) const {
  const std::pair<const char*, uint64_t> rows[] = {
      {"kvm: exits for port I/O", exits_io_},
      {"kvm: exits for MMIO (local APIC, IOAPIC)", exits_mmio_},
      {"kvm: exits for the machine's MSRs", exits_msr_},
      {"kvm: exits for hlt", exits_hlt_},
      {"kvm: exits when an interrupt could be taken", exits_window_},
      {"kvm: exits on a timer kick", exits_kick_},
      {"kvm: interrupts injected", injected_},
  };
  for (const auto& [what, n] : rows) {
    std::fprintf(out, "  %-48s %14llu\n", what, static_cast<unsigned long long>(n));
  }
}

}  // namespace btvm
