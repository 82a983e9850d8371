#pragma once
// Random but valid x86-64 instruction sequences for differential testing
// (DESIGN.md, Tests: "random instruction sequences run translated and
// natively on the host CPU"). A sequence is a list of items; an item is a
// few instructions that only make sense together — the `mov`s that point a
// base and an index register at valid memory, then the access through them;
// a call, its subroutine and the ret. Items do not depend on each other
// (apart from RSP, which the generator tracks), so a failing sequence can be
// shrunk by dropping items (see difftest.h, Minimize).
//
// Every sequence is reproducible from one 64-bit seed: the generator draws
// only from its own std::mt19937_64 and never from a distribution class
// whose output differs between standard libraries.

#include <Zydis/Zydis.h>

#include <bitset>
#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tests/native/native_runner.h"

namespace btvm::diff {

// The address space every sequence runs in, natively and on btvm: the same
// virtual addresses on both sides, so RIP-relative and absolute operands,
// pushed return addresses and fault addresses agree.
inline constexpr uint64_t kCodeAddress = native::kDefaultCodeAddress;  // 0x10000000
inline constexpr uint64_t kDataAddress = 0x20000000;                   // read-write, two pages
inline constexpr uint64_t kDataSize = 0x2000;
inline constexpr uint64_t kUnmappedAddress = 0x20002000;  // never mapped: #PF
inline constexpr uint64_t kReadOnlyAddress = 0x20003000;  // one read-only page
inline constexpr uint64_t kReadOnlySize = 0x1000;
inline constexpr uint64_t kStackAddress = 0x30000000;  // one page for push/pop
inline constexpr uint64_t kStackSize = 0x1000;
inline constexpr uint64_t kStackStart = kStackAddress + 0x800;  // RSP at entry
// RSP stays inside [kStackLow, kStackHigh] wherever the generator knows it.
inline constexpr uint64_t kStackLow = kStackAddress + 0x100;
inline constexpr uint64_t kStackHigh = kStackAddress + 0xf00;

// Instruction categories. A sequence mixes items from the enabled ones;
// those marked final end a sequence (everything after a fault is dead).
// Those that fail on the current translator (DefaultCategories, README.md)
// are opt-in, so that the default mix must pass.
#define BTVM_DIFF_CATEGORIES(X)                                                            \
  X(kAlu, "alu", false, "add/or/adc/sbb/and/sub/xor/cmp/test/mov, adcx/adox")              \
  X(kUnary, "unary", false, "inc/dec/neg/not")                                             \
  X(kShift, "shift", false, "shl/shr/sar/rol/ror/rcl/rcr by 1, imm, cl; shld/shrd")        \
  X(kMulDiv, "muldiv", false, "mul, imul (1, 2, 3 operands), div, idiv without #DE")       \
  X(kBits, "bits", false, "bt/bts/btr/btc, bsf/bsr, tzcnt/lzcnt/popcnt, bswap")            \
  X(kCmov, "cmov", false, "cmovcc, setcc")                                                 \
  X(kXchg, "xchg", false, "xchg, xadd, cmpxchg, cmpxchg8b/16b")                            \
  X(kLock, "lock", false, "lock-prefixed read-modify-write on memory")                     \
  X(kMovx, "movx", false, "movzx/movsx/movsxd, cbw/cwde/cdqe/cwd/cdq/cqo")                 \
  X(kLea, "lea", false, "lea, nop and prefetch with random addressing modes")              \
  X(kMem, "mem", false, "loads/stores in every addressing mode, movnti, movbe, clflush")   \
  X(kStack, "stack", false, "push/pop, call/ret, rsp arithmetic, leave")                   \
  X(kBranch, "branch", false, "forward jcc/jmp/jrcxz/loop/indirect jmp")                   \
  X(kString, "string", false, "movs/stos/lods/cmps/scas, rep/repe/repne, both DF")         \
  X(kFlags, "flags", false, "clc/stc/cmc/cld/std, lahf/sahf, pushfq/popfq")                \
  X(kSse, "sse", false, "SSE/SSE2/SSSE3/SSE4.1 integer ops on xmm")                        \
  X(kSseFp, "ssefp", false, "SSE/SSE2/SSE4.1 float ops and conversions")                   \
  X(kFault, "fault", true, "final #PF (load, store, fetch, rep), #GP, #UD, #BP")           \
  X(kHostFault, "hostfault", true, "final #GP of a misaligned SSE operand, #XM")           \
  X(kShift0, "shift0", false, "shifts/rotates by a count that changes no flag")            \
  X(kEnter, "enter", false, "enter")                                                       \
  X(kXlat, "xlat", false, "xlat")                                                          \
  X(kStack16, "stack16", false, "16-bit push/pop (66 prefix)")                             \
  X(kBranch32, "branch32", false, "jecxz and loop with a 32-bit address size")             \
  X(kBtMemR15, "btmemr15", false, "bt/bts/btr/btc [mem], r15")                             \
  X(kFaultFlags, "faultflags", true, "final #DE in div/idiv, #PF in a flag-writing RMW")   \
  X(kFaultSs, "faultss", true, "final #SS: a non-canonical address through RBP")           \
  X(kFaultSplit, "faultsplit", true, "final #GP of a misaligned SSE operand across pages") \
  X(kLoop, "loop", false, "counted loops: backward jcc/jmp/loop, a pointer walk, #PF mid-loop") \
  X(kFaultLoop, "faultloop", true, "final #GP/#SS of a non-canonical access in a loop")

enum class Category : uint8_t {
#define BTVM_DIFF_ENUM(id, name, final, text) id,
  BTVM_DIFF_CATEGORIES(BTVM_DIFF_ENUM)
#undef BTVM_DIFF_ENUM
      kCount
};
inline constexpr size_t kCategoryCount = static_cast<size_t>(Category::kCount);
using CategorySet = std::bitset<kCategoryCount>;

const char* CategoryName(Category c);
const char* CategoryHelp(Category c);
// True for a category whose item ends a sequence (a fault).
bool IsFinal(Category c);
std::optional<Category> CategoryByName(std::string_view name);
// The categories ctest runs: every one that passes on the current translator.
CategorySet DefaultCategories();

// What the host CPU implements (CPUID); the generator emits nothing else.
struct HostFeatures {
  bool popcnt = false, lzcnt = false, bmi1 = false, ssse3 = false, sse41 = false;
  bool cx16 = false, lahf = false, movbe = false, adx = false;
  static HostFeatures Detect();
};

// One instruction of an item, kept as an encoder request so that it can be
// re-encoded at any address (ZydisEncoderEncodeInstructionAbsolute: branch
// targets and RIP-relative displacements are absolute addresses).
struct Op {
  enum class Flow : uint8_t {
    kNext,    // falls through
    kJump,    // goes to the target only (jmp, indirect jmp)
    kBranch,  // falls through or goes to the target (jcc, jrcxz, loop)
    kCall,    // goes to the target; the matching ret comes back
    kRet,     // goes to the target (the op after the call)
  };
  // Where the target address is written when encoding.
  enum class Patch : uint8_t {
    kNone,
    kBranch,   // operand 0 is the relative branch target
    kRipDisp,  // the memory operand's displacement (RIP-relative lea/load)
    kImm,      // the last operand is an immediate holding the address
  };

  ZydisEncoderRequest req{};
  std::vector<uint8_t> raw;  // when not empty: these bytes, not `req`
  Flow flow = Flow::kNext;
  Patch patch = Patch::kNone;
  int target_op = -1;   // the target is this op of the same item...
  int skip_items = -1;  // ...or the first op after skipping this many items
  bool wide = false;    // rel32 rather than rel8
};

struct Item {
  Category category = Category::kAlu;
  std::vector<Op> ops;
  bool changes_rsp = false;  // a branch never skips it: RSP stays known
  bool loops = false;        // has a backward branch (a loop): flags flow around it
  bool ends_run = false;     // faults by construction: nothing after it runs
};

struct Sequence {
  std::vector<Item> items;
  native::MachineState initial;  // registers, flags, xmm, mxcsr and memory regions
  // Categories the generator failed to build an item of (50 tries): a
  // generator bug, or a host without the instructions.
  CategorySet dropped;
};

// A sequence laid out at kCodeAddress.
struct Encoded {
  struct Insn {
    uint64_t offset = 0;
    uint8_t length = 0;
    int item = 0;
    Op::Flow flow = Op::Flow::kNext;
    uint64_t target = 0;  // offset of the target for any flow but kNext
  };
  std::vector<uint8_t> code;
  std::vector<Insn> insns;
};

// What one instruction does to the arithmetic flags (RFLAGS bit positions):
// Zydis's `cpu_flags`, corrected where the effect depends on operand values
// Zydis cannot see — a rep cmps/scas may run no iteration, a shift by CL or
// by a count that masks to 0 may write nothing, a large count leaves more
// undefined. `defined` are flags surely written with a defined value,
// `undefined` flags that may hold anything afterwards.
// `written` are flags surely overwritten, with a defined value or not (a
// reader after it never sees the old value).
struct FlagEffect {
  uint64_t tested = 0, defined = 0, undefined = 0, written = 0;
};
FlagEffect FlagEffectOf(const uint8_t* code, size_t length);

// Lays the sequence out; an error names the op that does not encode.
bool Encode(const Sequence& seq, Encoded* out, std::string* error);

// Intel-syntax listing, one instruction a line: offset, bytes, text.
std::string Disassemble(const Encoded& e);

struct GeneratorConfig {
  CategorySet categories = DefaultCategories();
  HostFeatures host;
  int min_items = 3;
  int max_items = 24;
};

// Derives the seed of sequence `index` of a run seeded with `seed`.
uint64_t SequenceSeed(uint64_t seed, uint64_t index);

// Generates one sequence from `seed` (deterministic).
Sequence Generate(const GeneratorConfig& config, uint64_t seed);

}  // namespace btvm::diff
