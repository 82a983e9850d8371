#include "runtime/interrupts.h"

#include "runtime/descriptors.h"

namespace btvm {

namespace {

bool IsContributory(uint8_t v) { return v == kDE || (v >= kTS && v <= kGP); }

// One delivery attempt; on failure *fault is the exception it raised.
bool TryDeliver(Mmu& mmu, CpuState& cpu, const GuestException& ev, EventSource source,
                GuestException* fault) {
  const uint16_t ext = source == EventSource::kSoftware ? 0 : 1;
  const uint32_t idt_err = (ev.vector << 3) | 2 | ext;  // IDT bit set
  if (!cpu.LongMode()) {
    *fault = GuestException::Gp(idt_err);  // only long mode is modelled
    return false;
  }
  if (uint32_t(ev.vector) * 16 + 15 > cpu.idtr.limit) {
    *fault = GuestException::Gp(idt_err);
    return false;
  }
  uint64_t gate[2];
  if (!mmu.ReadVirt(cpu, GuestVirt(cpu.idtr.base + ev.vector * 16ull), gate, 16, kMmuKernel,
                    fault)) {
    return false;
  }
  unsigned type = (gate[0] >> 40) & 0xf;
  unsigned gate_dpl = (gate[0] >> 45) & 3;
  bool present = (gate[0] >> 47) & 1;
  if (type != 0xe && type != 0xf) {
    *fault = GuestException::Gp(idt_err);
    return false;
  }
  if (source == EventSource::kSoftware && gate_dpl < cpu.Cpl()) {
    *fault = GuestException::Gp(idt_err);
    return false;
  }
  if (!present) {
    *fault = {kNP, true, idt_err, 0};
    return false;
  }
  uint16_t cs_sel = static_cast<uint16_t>(gate[0] >> 16);
  uint64_t target = (gate[0] & 0xffff) | (((gate[0] >> 48) & 0xffff) << 16) | (gate[1] << 32);
  unsigned ist = (gate[0] >> 32) & 7;
  if (!IsCanonical(target)) {  // SDM Vol. 3 §6.14.1: a non-canonical handler is #GP(0)
    *fault = GuestException::Gp(0);
    return false;
  }

  Descriptor cs;
  if ((cs_sel & ~3u) == 0) {
    *fault = GuestException::Gp(ext);
    return false;
  }
  if (!ReadDescriptor(mmu, cpu, cs_sel, false, &cs, fault)) return false;
  if (!cs.Code() || !cs.Long() || cs.Dpl() > cpu.Cpl()) {
    *fault = GuestException::Gp((cs_sel & ~3u) | ext);
    return false;
  }
  if (!cs.Present()) {
    *fault = {kNP, true, static_cast<uint32_t>((cs_sel & ~3u) | ext), 0};
    return false;
  }
  unsigned new_cpl = cs.Dpl();

  // The new stack (SDM Vol. 3 §6.14.4, §6.14.5).
  uint64_t rsp = cpu.gpr[kRsp];
  if (ist != 0 || new_cpl < cpu.Cpl()) {
    uint64_t off = ist ? 0x24 + 8 * (ist - 1) : 4 + 8 * new_cpl;
    if (off + 7 > cpu.tr.limit) {
      *fault = {kTS, true, static_cast<uint32_t>(cpu.tr.selector & ~3u), 0};
      return false;
    }
    if (!mmu.ReadVirt(cpu, GuestVirt(cpu.tr.base + off), &rsp, 8, kMmuKernel, fault)) {
      return false;
    }
  }
  rsp &= ~uint64_t{15};

  uint64_t frame[6];
  int n = 0;
  uint64_t old_ss = cpu.seg[kSs].selector;
  if (ev.has_error_code) frame[n++] = ev.error_code;
  frame[n++] = cpu.rip;
  frame[n++] = cpu.seg[kCs].selector;
  frame[n++] = cpu.rflags & ~rflags::kRF;
  frame[n++] = cpu.gpr[kRsp];
  frame[n++] = old_ss;
  // Frame layout from low to high addresses: [error] rip cs rflags rsp ss.
  uint64_t new_rsp = rsp - 8 * n;
  CpuState as_target = cpu;
  as_target.seg[kCs].selector = (cs_sel & ~3u) | new_cpl;  // pushes are at the new CPL
  const MmuIndex index = new_cpl == 3 ? kMmuUser : kMmuKernel;
  if (!mmu.WriteVirt(as_target, GuestVirt(new_rsp), frame, 8 * n, index, fault)) {
    // The CPU pushes SS first, at the top: the fault it reports is that of
    // the highest slot that cannot be written.
    for (int i = n - 1; i >= 0; --i) {
      Mmu::Lookup l = mmu.Translate(as_target, GuestVirt(new_rsp + 8 * i), Access::kWrite, index);
      if (l.kind == Mmu::Lookup::kFault) {
        *fault = l.fault;
        break;
      }
    }
    if (fault->vector == kPF) fault->error_code &= ~pf::kUser;
    return false;
  }

  if (new_cpl < cpu.Cpl()) {
    cpu.seg[kSs] = SegmentReg{};
    cpu.seg[kSs].selector = static_cast<uint16_t>(new_cpl);
  }
  cpu.seg[kCs] = cs.ToSegment(static_cast<uint16_t>((cs_sel & ~3u) | new_cpl));
  cpu.gpr[kRsp] = new_rsp;
  cpu.rip = target;
  cpu.rflags &= ~(rflags::kTF | rflags::kNT | rflags::kRF | rflags::kVM);
  if (type == 0xe) cpu.rflags &= ~rflags::kIF;
  if (ev.vector == kPF && source == EventSource::kException) cpu.cr2 = ev.cr2;
  return true;
}

}  // namespace

DeliveryResult DeliverEvent(Mmu& mmu, CpuState& cpu, const GuestException& event,
                            EventSource source, uint64_t insn_rip) {
  if (event.vector == kPF && source == EventSource::kException) cpu.cr2 = event.cr2;
  GuestException fault;
  if (TryDeliver(mmu, cpu, event, source, &fault)) return DeliveryResult::kDelivered;
  // A fault while delivering int n / int3 / into is a fault of that
  // instruction: delivered on its own, with RIP at the instruction, and no
  // double-fault rules (int 8 is not a #DF).
  if (source == EventSource::kSoftware) {
    cpu.rip = insn_rip;
    return DeliverEvent(mmu, cpu, fault, EventSource::kException);
  }
  if (event.vector == kDF) return DeliveryResult::kTripleFault;
  // A fault while delivering: benign ones are delivered serially, the
  // contributory/page-fault combinations become #DF (SDM Vol. 3 Table 6-5).
  bool df = (IsContributory(event.vector) && IsContributory(fault.vector)) ||
            (event.vector == kPF && (IsContributory(fault.vector) || fault.vector == kPF));
  GuestException next = df ? GuestException{kDF, true, 0, 0} : fault;
  // A page fault during delivery loads CR2 whether or not it becomes #DF
  // (a #DF handler reads it to recognise a stack overflow).
  if (fault.vector == kPF) cpu.cr2 = fault.cr2;
  if (TryDeliver(mmu, cpu, next, EventSource::kException, &fault)) {
    return DeliveryResult::kDelivered;
  }
  if (next.vector == kDF) return DeliveryResult::kTripleFault;
  if (fault.vector == kPF) cpu.cr2 = fault.cr2;
  GuestException df_event{kDF, true, 0, 0};
  return TryDeliver(mmu, cpu, df_event, EventSource::kException, &fault)
             ? DeliveryResult::kDelivered
             : DeliveryResult::kTripleFault;
}

}  // namespace btvm
