// Layout of a sequence at kCodeAddress, its listing, and what each
// instruction does to the flags.

#include <cstdio>

#include "tests/diff/gen_internal.h"

namespace btvm::diff {

using namespace gen;

FlagEffect FlagEffectOf(const uint8_t* code, size_t length) {
  ZydisDisassembledInstruction d;
  if (!ZYAN_SUCCESS(ZydisDisassembleIntel(kMode, kCodeAddress, code, length, &d)) ||
      d.info.cpu_flags == nullptr) {
    return {};
  }
  const ZydisAccessedFlags& f = *d.info.cpu_flags;
  FlagEffect e;
  e.tested = f.tested & kArithFlags;
  e.undefined = f.undefined & kArithFlags;
  e.defined = (f.modified | f.set_0 | f.set_1) & kArithFlags & ~e.undefined;
  e.written = e.defined | e.undefined;
  const ZydisMnemonic m = d.info.mnemonic;
  // rep cmps/scas with RCX = 0 compare nothing and write no flag.
  if (d.info.attributes & (ZYDIS_ATTRIB_HAS_REPE | ZYDIS_ATTRIB_HAS_REPNE))
    e.defined = e.written = 0;
  const bool shift = m == MN(SHL) || m == MN(SHR) || m == MN(SAR) || m == MN(ROL) || m == MN(ROR) ||
                     m == MN(RCL) || m == MN(RCR) || m == MN(SHLD) || m == MN(SHRD);
  if (shift) {
    const ZydisDecodedOperand& count = d.operands[d.info.operand_count_visible - 1];
    const unsigned size = d.operands[0].size / 8;
    if (count.type != ZYDIS_OPERAND_TYPE_IMMEDIATE) {
      e.defined = e.written = 0;  // by CL: perhaps by 0, which writes nothing
    } else {
      const unsigned n = static_cast<unsigned>(count.imm.value.u);
      const unsigned masked = n & (size == 8 ? 63 : 31);
      if (KeepsFlags(m, size, n)) {
        e.defined = e.undefined = e.written = 0;
      } else if ((m == MN(SHL) || m == MN(SHR)) && masked >= 8 * size) {
        // SDM Vol. 2 SAL/SAR/SHL/SHR: CF undefined once the count reaches
        // the operand size.
        e.undefined |= 1;
        e.defined &= ~uint64_t{1};
      } else if ((m == MN(SHLD) || m == MN(SHRD)) && masked > 8 * size) {
        // SDM Vol. 2 SHLD/SHRD: a count beyond the operand size leaves the
        // result and the flags undefined.
        e.undefined |= e.defined;
        e.defined = 0;
      }
    }
  }
  return e;
}

bool Encode(const Sequence& seq, Encoded* out, std::string* error) {
  // Every op's length is independent of where it lies (branch widths are
  // fixed per op, RIP-relative displacements are always 32-bit), so one
  // pass measures and a second pass encodes with the real targets. A short
  // branch whose target is out of reach is widened and the layout redone.
  std::vector<std::vector<bool>> widen(seq.items.size());
  for (size_t i = 0; i < seq.items.size(); ++i) widen[i].assign(seq.items[i].ops.size(), false);

  for (int attempt = 0; attempt < 8; ++attempt) {
    auto request = [&](size_t i, size_t j) {
      ZydisEncoderRequest r = seq.items[i].ops[j].req;
      if (widen[i][j]) {
        r.branch_type = ZYDIS_BRANCH_TYPE_NEAR;
        r.branch_width = ZYDIS_BRANCH_WIDTH_32;
      }
      return r;
    };
    // Pass 1: lengths, with each target at the op itself.
    std::vector<std::vector<uint64_t>> addr(seq.items.size());
    uint64_t pc = kCodeAddress;
    for (size_t i = 0; i < seq.items.size(); ++i) {
      for (size_t j = 0; j < seq.items[i].ops.size(); ++j) {
        const Op& op = seq.items[i].ops[j];
        addr[i].push_back(pc);
        if (!op.raw.empty()) {
          pc += op.raw.size();
          continue;
        }
        const ZydisEncoderRequest r = Patched(op, request(i, j), pc);
        std::vector<uint8_t> b;
        if (!EncodeAt(r, pc, &b)) {
          if (error)
            *error = "item " + std::to_string(i) + " op " + std::to_string(j) + " does not encode";
          return false;
        }
        pc += b.size();
      }
    }
    const uint64_t end = pc;
    auto target_of = [&](size_t i, const Op& op) -> uint64_t {
      if (op.target_op >= 0) {
        if (static_cast<size_t>(op.target_op) < addr[i].size()) return addr[i][op.target_op];
        for (size_t k = i + 1; k < seq.items.size(); ++k) {
          if (!addr[k].empty()) return addr[k][0];
        }
        return end;
      }
      if (op.skip_items >= 0) {
        const size_t k = i + 1 + static_cast<size_t>(op.skip_items);
        return k < seq.items.size() ? addr[k][0] : end;
      }
      return 0;
    };
    // Pass 2: the real encoding.
    Encoded e;
    bool again = false;
    for (size_t i = 0; i < seq.items.size() && !again; ++i) {
      for (size_t j = 0; j < seq.items[i].ops.size(); ++j) {
        const Op& op = seq.items[i].ops[j];
        const uint64_t at = addr[i][j];
        Encoded::Insn insn;
        insn.offset = at - kCodeAddress;
        insn.item = static_cast<int>(i);
        insn.flow = op.flow;
        const uint64_t target = target_of(i, op);
        if (op.flow != Op::Flow::kNext) insn.target = target - kCodeAddress;
        std::vector<uint8_t> b;
        if (!op.raw.empty()) {
          b = op.raw;
        } else {
          const ZydisEncoderRequest r = Patched(op, request(i, j), target);
          if (!EncodeAt(r, at, &b)) {
            if (op.patch == Op::Patch::kBranch && !widen[i][j]) {
              widen[i][j] = true;  // out of rel8 reach
              again = true;
              break;
            }
            if (error)
              *error =
                  "item " + std::to_string(i) + " op " + std::to_string(j) + " does not encode";
            return false;
          }
        }
        const uint64_t next = j + 1 < addr[i].size() ? addr[i][j + 1] : [&] {
          for (size_t k = i + 1; k < seq.items.size(); ++k) {
            if (!addr[k].empty()) return addr[k][0];
          }
          return end;
        }();
        if (at + b.size() != next) {
          if (error)
            *error = "item " + std::to_string(i) + " op " + std::to_string(j) + " changed length";
          return false;
        }
        insn.length = static_cast<uint8_t>(b.size());
        e.code.insert(e.code.end(), b.begin(), b.end());
        e.insns.push_back(insn);
      }
    }
    if (again) continue;
    *out = std::move(e);
    return true;
  }
  if (error) *error = "layout does not converge";
  return false;
}

std::string Disassemble(const Encoded& e) {
  std::string s;
  for (const Encoded::Insn& insn : e.insns) {
    ZydisDisassembledInstruction d;
    char line[256];
    const uint8_t* p = e.code.data() + insn.offset;
    std::string hex;
    for (unsigned i = 0; i < insn.length; ++i) {
      char b[4];
      std::snprintf(b, sizeof b, "%02x ", p[i]);
      hex += b;
    }
    const bool ok =
        ZYAN_SUCCESS(ZydisDisassembleIntel(kMode, kCodeAddress + insn.offset, p, insn.length, &d));
    std::snprintf(line, sizeof line, "  %4llx: %-36s %s\n",
                  static_cast<unsigned long long>(insn.offset), hex.c_str(),
                  ok ? d.text : "(undecodable)");
    s += line;
  }
  return s;
}

}  // namespace btvm::diff
