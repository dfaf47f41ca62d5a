// Thin Node binding over libbpf. It exposes libbpf and the bpf(2)/setns(2)
// calls faithfully; every policy decision (naming, codecs, retries, which
// namespace) lives in TypeScript (src/bpf/).
//
// Errors are thrown as JS Errors carrying `errno`, `code` (errno name), `op`
// and, for object loads, `log` (libbpf's output including the verifier log).

#include <napi.h>
#include <uv.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <net/if.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <memory>
#include <time.h>
#include <cstdarg>
#include <cstring>
#include <fcntl.h>
#include <sched.h>
#include <sys/sysinfo.h>
#include <sys/ioctl.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <linux/if_tun.h>
#include <linux/if_packet.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/file.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

// ---------------------------------------------------------------- errors

Napi::Error ErrnoError(Napi::Env env, const std::string& op, int err) {
  if (err < 0) err = -err;
  const char* name = strerrorname_np(err);
  std::string msg = op + ": " + std::strerror(err);
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, name ? name : "EUNKNOWN"));
  e.Set("op", Napi::String::New(env, op));
  return e;
}

[[noreturn]] void ThrowErrno(Napi::Env env, const std::string& op, int err) {
  throw ErrnoError(env, op, err);
}

// ---------------------------------------------------------------- libbpf log capture
// libbpf reports through one global print callback. While an object loads we
// capture everything it prints (including the verifier log it prints after a
// rejected program) so the thrown error can carry it.

std::string* g_capture = nullptr;
bool g_print_debug = false;

int PrintCallback(enum libbpf_print_level level, const char* fmt, va_list args) {
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  if (n < 0) return 0;
  std::string text(static_cast<size_t>(n) + 1, '\0');
  vsnprintf(text.data(), text.size(), fmt, args);
  text.resize(static_cast<size_t>(n));
  if (g_capture != nullptr) {
    if (level != LIBBPF_DEBUG || g_print_debug) g_capture->append(text);
    return 0;
  }
  if (level == LIBBPF_WARN || g_print_debug) fputs(text.c_str(), stderr);
  return 0;
}

struct CaptureScope {
  std::string text;
  CaptureScope() { g_capture = &text; }
  ~CaptureScope() { g_capture = nullptr; }
};

// ---------------------------------------------------------------- argument helpers

std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsString())
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

int64_t IntArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsNumber())
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  return info[i].As<Napi::Number>().Int64Value();
}

Napi::Buffer<uint8_t> BufferArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsBuffer())
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a Buffer");
  return info[i].As<Napi::Buffer<uint8_t>>();
}

bool OptionalBuffer(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && info[i].IsBuffer();
}

// ---------------------------------------------------------------- BpfObject

class BpfObject : public Napi::ObjectWrap<BpfObject> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "BpfObject",
                       {
                           InstanceMethod("maps", &BpfObject::Maps),
                           InstanceMethod("programs", &BpfObject::Programs),
                           InstanceMethod("setMaxEntries", &BpfObject::SetMaxEntries),
                           InstanceMethod("setPinPath", &BpfObject::SetPinPath),
                           InstanceMethod("initialValue", &BpfObject::InitialValue),
                           InstanceMethod("setInitialValue", &BpfObject::SetInitialValue),
                           InstanceMethod("setAutoload", &BpfObject::SetAutoload),
                           InstanceMethod("load", &BpfObject::Load),
                           InstanceMethod("mapFd", &BpfObject::MapFd),
                           InstanceMethod("programFd", &BpfObject::ProgramFd),
                           InstanceMethod("close", &BpfObject::Close),
                       });
  }

  explicit BpfObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfObject>(info) {
    std::string path = StringArg(info, 0, "path");
    CaptureScope capture;
    obj_ = bpf_object__open_file(path.c_str(), nullptr);
    long err = libbpf_get_error(obj_);
    if (err != 0) {
      obj_ = nullptr;
      Napi::Error e = ErrnoError(info.Env(), "bpf_object__open_file(" + path + ")", static_cast<int>(err));
      e.Set("log", Napi::String::New(info.Env(), capture.text));
      throw e;
    }
  }

  ~BpfObject() override { Destroy(); }

 private:
  bpf_object* obj_ = nullptr;
  bool loaded_ = false;

  void Destroy() {
    if (obj_ != nullptr) bpf_object__close(obj_);
    obj_ = nullptr;
  }

  bpf_object* Obj(Napi::Env env) {
    if (obj_ == nullptr) throw Napi::Error::New(env, "BPF object is closed");
    return obj_;
  }

  bpf_map* FindMap(Napi::Env env, const std::string& name) {
    bpf_map* m = bpf_object__find_map_by_name(Obj(env), name.c_str());
    if (m == nullptr) ThrowErrno(env, "map '" + name + "' not found", ENOENT);
    return m;
  }

  bpf_program* FindProgram(Napi::Env env, const std::string& name) {
    bpf_program* p = bpf_object__find_program_by_name(Obj(env), name.c_str());
    if (p == nullptr) ThrowErrno(env, "program '" + name + "' not found", ENOENT);
    return p;
  }

  Napi::Value Maps(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array out = Napi::Array::New(env);
    uint32_t i = 0;
    bpf_map* m;
    bpf_object__for_each_map(m, Obj(env)) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", bpf_map__name(m));
      o.Set("type", static_cast<double>(bpf_map__type(m)));
      o.Set("keySize", bpf_map__key_size(m));
      o.Set("valueSize", bpf_map__value_size(m));
      o.Set("maxEntries", bpf_map__max_entries(m));
      o.Set("flags", bpf_map__map_flags(m));
      o.Set("internal", bpf_map__is_internal(m));
      const char* pin = bpf_map__pin_path(m);
      if (pin != nullptr) o.Set("pinPath", pin);
      if (loaded_) o.Set("fd", bpf_map__fd(m));
      out.Set(i++, o);
    }
    return out;
  }

  Napi::Value Programs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array out = Napi::Array::New(env);
    uint32_t i = 0;
    bpf_program* p;
    bpf_object__for_each_program(p, Obj(env)) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", bpf_program__name(p));
      o.Set("section", bpf_program__section_name(p));
      o.Set("type", static_cast<double>(bpf_program__type(p)));
      o.Set("autoload", bpf_program__autoload(p));
      if (loaded_) o.Set("fd", bpf_program__fd(p));
      out.Set(i++, o);
    }
    return out;
  }

  Napi::Value SetMaxEntries(const Napi::CallbackInfo& info) {
    std::string name = StringArg(info, 0, "map name");
    int64_t n = IntArg(info, 1, "maxEntries");
    int err = bpf_map__set_max_entries(FindMap(info.Env(), name), static_cast<uint32_t>(n));
    if (err) ThrowErrno(info.Env(), "bpf_map__set_max_entries(" + name + ")", err);
    return info.Env().Undefined();
  }

  Napi::Value SetPinPath(const Napi::CallbackInfo& info) {
    std::string name = StringArg(info, 0, "map name");
    bpf_map* m = FindMap(info.Env(), name);
    int err;
    if (info.Length() > 1 && info[1].IsString()) {
      std::string path = info[1].As<Napi::String>().Utf8Value();
      err = bpf_map__set_pin_path(m, path.c_str());
    } else {
      err = bpf_map__set_pin_path(m, nullptr);
    }
    if (err) ThrowErrno(info.Env(), "bpf_map__set_pin_path(" + name + ")", err);
    return info.Env().Undefined();
  }

  Napi::Value InitialValue(const Napi::CallbackInfo& info) {
    std::string name = StringArg(info, 0, "map name");
    size_t size = 0;
    const void* data = bpf_map__initial_value(FindMap(info.Env(), name), &size);
    if (data == nullptr) return info.Env().Null();
    return Napi::Buffer<uint8_t>::Copy(info.Env(), static_cast<const uint8_t*>(data), size);
  }

  Napi::Value SetInitialValue(const Napi::CallbackInfo& info) {
    std::string name = StringArg(info, 0, "map name");
    auto buf = BufferArg(info, 1, "value");
    int err = bpf_map__set_initial_value(FindMap(info.Env(), name), buf.Data(), buf.Length());
    if (err) ThrowErrno(info.Env(), "bpf_map__set_initial_value(" + name + ")", err);
    return info.Env().Undefined();
  }

  Napi::Value SetAutoload(const Napi::CallbackInfo& info) {
    std::string name = StringArg(info, 0, "program name");
    bool on = info.Length() > 1 && info[1].ToBoolean().Value();
    int err = bpf_program__set_autoload(FindProgram(info.Env(), name), on);
    if (err) ThrowErrno(info.Env(), "bpf_program__set_autoload(" + name + ")", err);
    return info.Env().Undefined();
  }

  Napi::Value Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bpf_object* obj = Obj(env);
    CaptureScope capture;
    int err = bpf_object__load(obj);
    if (err) {
      // libbpf has already unloaded whatever it created; the object can only
      // be closed now.
      Napi::Error e = ErrnoError(env, std::string("bpf_object__load(") + bpf_object__name(obj) + ")", err);
      e.Set("log", Napi::String::New(env, capture.text));
      throw e;
    }
    loaded_ = true;
    return Napi::String::New(env, capture.text);
  }

  Napi::Value MapFd(const Napi::CallbackInfo& info) {
    std::string name = StringArg(info, 0, "map name");
    int fd = bpf_map__fd(FindMap(info.Env(), name));
    if (fd < 0) ThrowErrno(info.Env(), "map '" + name + "' is not loaded", fd);
    return Napi::Number::New(info.Env(), fd);
  }

  Napi::Value ProgramFd(const Napi::CallbackInfo& info) {
    std::string name = StringArg(info, 0, "program name");
    int fd = bpf_program__fd(FindProgram(info.Env(), name));
    if (fd < 0) ThrowErrno(info.Env(), "program '" + name + "' is not loaded", fd);
    return Napi::Number::New(info.Env(), fd);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Destroy();
    return info.Env().Undefined();
  }
};

// ---------------------------------------------------------------- maps

Napi::Value MapLookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  auto key = BufferArg(info, 1, "key");
  size_t valueSize = static_cast<size_t>(IntArg(info, 2, "valueSize"));
  uint64_t flags = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().Int64Value() : 0;
  auto value = Napi::Buffer<uint8_t>::New(env, valueSize);
  int err = bpf_map_lookup_elem_flags(fd, key.Data(), value.Data(), flags);
  if (err) {
    if (errno == ENOENT) return env.Null();
    ThrowErrno(env, "bpf_map_lookup_elem", errno);
  }
  return value;
}

Napi::Value MapLookupAndDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  auto key = BufferArg(info, 1, "key");
  size_t valueSize = static_cast<size_t>(IntArg(info, 2, "valueSize"));
  auto value = Napi::Buffer<uint8_t>::New(env, valueSize);
  int err = bpf_map_lookup_and_delete_elem(fd, key.Data(), value.Data());
  if (err) {
    if (errno == ENOENT) return env.Null();
    ThrowErrno(env, "bpf_map_lookup_and_delete_elem", errno);
  }
  return value;
}

Napi::Value MapUpdate(const Napi::CallbackInfo& info) {
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  auto key = BufferArg(info, 1, "key");
  auto value = BufferArg(info, 2, "value");
  uint64_t flags = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().Int64Value() : 0;
  if (bpf_map_update_elem(fd, key.Data(), value.Data(), flags)) ThrowErrno(info.Env(), "bpf_map_update_elem", errno);
  return info.Env().Undefined();
}

Napi::Value MapDelete(const Napi::CallbackInfo& info) {
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  auto key = BufferArg(info, 1, "key");
  if (bpf_map_delete_elem(fd, key.Data())) {
    if (errno == ENOENT) return Napi::Boolean::New(info.Env(), false);
    ThrowErrno(info.Env(), "bpf_map_delete_elem", errno);
  }
  return Napi::Boolean::New(info.Env(), true);
}

Napi::Value MapNextKey(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  const void* prev = OptionalBuffer(info, 1) ? info[1].As<Napi::Buffer<uint8_t>>().Data() : nullptr;
  size_t keySize = static_cast<size_t>(IntArg(info, 2, "keySize"));
  auto next = Napi::Buffer<uint8_t>::New(env, keySize);
  if (bpf_map_get_next_key(fd, prev, next.Data())) {
    if (errno == ENOENT) return env.Null();
    ThrowErrno(env, "bpf_map_get_next_key", errno);
  }
  return next;
}

// lookupBatch(fd, inToken|null, keySize, valueSize, count, tokenSize)
//   -> { keys, values, count, token, done }
Napi::Value MapLookupBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  bool hasIn = OptionalBuffer(info, 1);
  size_t keySize = static_cast<size_t>(IntArg(info, 2, "keySize"));
  size_t valueSize = static_cast<size_t>(IntArg(info, 3, "valueSize"));
  uint32_t count = static_cast<uint32_t>(IntArg(info, 4, "count"));
  size_t tokenSize = static_cast<size_t>(IntArg(info, 5, "tokenSize"));
  auto keys = Napi::Buffer<uint8_t>::New(env, keySize * count);
  auto values = Napi::Buffer<uint8_t>::New(env, valueSize * count);
  auto token = Napi::Buffer<uint8_t>::New(env, tokenSize);
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  uint32_t n = count;
  int err = bpf_map_lookup_batch(fd, hasIn ? info[1].As<Napi::Buffer<uint8_t>>().Data() : nullptr, token.Data(),
                                 keys.Data(), values.Data(), &n, &opts);
  bool done = false;
  if (err) {
    if (errno != ENOENT) ThrowErrno(env, "bpf_map_lookup_batch", errno);
    done = true;  // ENOENT: the last batch, n holds how many it returned
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("keys", keys);
  out.Set("values", values);
  out.Set("count", n);
  out.Set("token", token);
  out.Set("done", done);
  return out;
}

Napi::Value MapUpdateBatch(const Napi::CallbackInfo& info) {
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  auto keys = BufferArg(info, 1, "keys");
  auto values = BufferArg(info, 2, "values");
  uint32_t count = static_cast<uint32_t>(IntArg(info, 3, "count"));
  uint64_t flags = info.Length() > 4 && info[4].IsNumber() ? info[4].As<Napi::Number>().Int64Value() : 0;
  LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = flags);
  uint32_t n = count;
  if (bpf_map_update_batch(fd, keys.Data(), values.Data(), &n, &opts)) {
    Napi::Error e = ErrnoError(info.Env(), "bpf_map_update_batch", errno);
    e.Set("completed", Napi::Number::New(info.Env(), n));
    throw e;
  }
  return Napi::Number::New(info.Env(), n);
}

Napi::Value MapDeleteBatch(const Napi::CallbackInfo& info) {
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  auto keys = BufferArg(info, 1, "keys");
  uint32_t count = static_cast<uint32_t>(IntArg(info, 2, "count"));
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  uint32_t n = count;
  if (bpf_map_delete_batch(fd, keys.Data(), &n, &opts)) {
    Napi::Error e = ErrnoError(info.Env(), "bpf_map_delete_batch", errno);
    e.Set("completed", Napi::Number::New(info.Env(), n));
    throw e;
  }
  return Napi::Number::New(info.Env(), n);
}

Napi::Value MapInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  bpf_map_info mi{};
  uint32_t len = sizeof(mi);
  if (bpf_obj_get_info_by_fd(fd, &mi, &len)) ThrowErrno(env, "bpf_obj_get_info_by_fd(map)", errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", mi.id);
  o.Set("name", mi.name);
  o.Set("type", mi.type);
  o.Set("keySize", mi.key_size);
  o.Set("valueSize", mi.value_size);
  o.Set("maxEntries", mi.max_entries);
  o.Set("flags", mi.map_flags);
  return o;
}

Napi::Value ProgInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  bpf_prog_info pi{};
  uint32_t len = sizeof(pi);
  if (bpf_obj_get_info_by_fd(fd, &pi, &len)) ThrowErrno(env, "bpf_obj_get_info_by_fd(prog)", errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", pi.id);
  o.Set("name", pi.name);
  o.Set("type", pi.type);
  return o;
}

Napi::Value LinkInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  bpf_link_info li{};
  uint32_t len = sizeof(li);
  if (bpf_obj_get_info_by_fd(fd, &li, &len)) ThrowErrno(env, "bpf_obj_get_info_by_fd(link)", errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", li.id);
  o.Set("type", li.type);
  o.Set("progId", li.prog_id);
  if (li.type == BPF_LINK_TYPE_XDP) o.Set("ifindex", li.xdp.ifindex);
  return o;
}

Napi::Value NumPossibleCpus(const Napi::CallbackInfo& info) {
  int n = libbpf_num_possible_cpus();
  if (n < 0) ThrowErrno(info.Env(), "libbpf_num_possible_cpus", n);
  return Napi::Number::New(info.Env(), n);
}

// Runs the calling thread once on every online CPU, then restores its
// affinity. A thread running on a CPU in process context proves that no
// softirq (NAPI poll, and so no XDP program run) begun there before is still
// running: softirqs run with bottom halves disabled and are not preempted.
// Returns the CPUs visited; throws if one is online but cannot be entered.
Napi::Value CpuBarrier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  cpu_set_t saved;
  if (sched_getaffinity(0, sizeof(saved), &saved)) ThrowErrno(env, "sched_getaffinity", errno);
  // Briefly real-time (where permitted): a busy CPU then takes the thread at
  // once instead of after the running task's time slice.
  int policy = sched_getscheduler(0);
  struct sched_param saved_param {};
  sched_getparam(0, &saved_param);
  struct sched_param rt {};
  rt.sched_priority = 1;
  bool raised = policy == SCHED_OTHER && sched_setscheduler(0, SCHED_FIFO, &rt) == 0;
  int n = get_nprocs_conf();
  int visited = 0;
  int err = 0;
  // The CPU the thread runs on first (pinning it there moves nothing), then
  // the others from it on: one migration per other CPU, and none to restore
  // (the saved mask allows the last one). A migration is what this costs
  // (on a VM, waking an idle vCPU), so none is spent on a CPU already proven.
  int first = sched_getcpu();
  if (first < 0 || first >= n) first = 0;
  for (int k = 0; k < n && k < CPU_SETSIZE; k++) {
    int cpu = (first + k) % n;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (sched_setaffinity(0, sizeof(one), &one)) {
      if (errno == EINVAL) continue;  // offline (or outside our cpuset: caught below)
      err = errno;
      break;
    }
    if (sched_getcpu() != cpu) {
      err = EAGAIN;
      break;
    }
    visited++;
  }
  int restore = sched_setaffinity(0, sizeof(saved), &saved) ? errno : 0;
  if (raised) sched_setscheduler(0, policy, &saved_param);
  if (err) ThrowErrno(env, "sched_setaffinity(barrier)", err);
  if (restore) ThrowErrno(env, "sched_setaffinity(restore)", restore);
  if (visited < get_nprocs()) ThrowErrno(env, "cpu barrier: an online CPU is outside this thread's cpuset", EPERM);
  return Napi::Number::New(env, visited);
}

// ---------------------------------------------------------------- fds, pinning

Napi::Value ObjPin(const Napi::CallbackInfo& info) {
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  std::string path = StringArg(info, 1, "path");
  if (bpf_obj_pin(fd, path.c_str())) ThrowErrno(info.Env(), "bpf_obj_pin(" + path + ")", errno);
  return info.Env().Undefined();
}

Napi::Value ObjGet(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "path");
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) ThrowErrno(info.Env(), "bpf_obj_get(" + path + ")", errno);
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  if (close(fd)) ThrowErrno(info.Env(), "close", errno);
  return info.Env().Undefined();
}

// flock(2) on an fd: true when taken, false when another open file
// description holds it (EWOULDBLOCK, with nonblock).
Napi::Value Flock(const Napi::CallbackInfo& info) {
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  std::string op = info[1].As<Napi::String>().Utf8Value();
  bool nonblock = info.Length() > 2 && info[2].ToBoolean().Value();
  int how = op == "ex" ? LOCK_EX : op == "sh" ? LOCK_SH : op == "un" ? LOCK_UN : -1;
  if (how < 0) throw Napi::TypeError::New(info.Env(), "flock: op must be 'ex', 'sh' or 'un'");
  if (nonblock) how |= LOCK_NB;
  if (flock(fd, how) == 0) return Napi::Boolean::New(info.Env(), true);
  if (errno == EWOULDBLOCK) return Napi::Boolean::New(info.Env(), false);
  ThrowErrno(info.Env(), "flock", errno);
}

// pidfd_open(2): a process handle for pidfd_getfd (close it with closeFd).
Napi::Value PidfdOpen(const Napi::CallbackInfo& info) {
  int pid = static_cast<int>(IntArg(info, 0, "pid"));
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) ThrowErrno(info.Env(), "pidfd_open(" + std::to_string(pid) + ")", errno);
  return Napi::Number::New(info.Env(), fd);
}

// pidfd_getfd(2): this process's own copy of another process's fd (same
// open file: a socket's options read through it are that socket's).
Napi::Value PidfdGetfd(const Napi::CallbackInfo& info) {
  int pidfd = static_cast<int>(IntArg(info, 0, "pidfd"));
  int target = static_cast<int>(IntArg(info, 1, "fd"));
  int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, target, 0));
  if (fd < 0) ThrowErrno(info.Env(), "pidfd_getfd(" + std::to_string(target) + ")", errno);
  return Napi::Number::New(info.Env(), fd);
}

// An AF_PACKET socket's PACKET_STATISTICS (which the kernel resets on every
// read) and the interface it is bound to; null for any other fd.
Napi::Value PacketSocketStats(const Napi::CallbackInfo& info) {
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  struct sockaddr_ll sll {};
  socklen_t sl = sizeof sll;
  if (getsockname(fd, reinterpret_cast<struct sockaddr*>(&sll), &sl) != 0 || sll.sll_family != AF_PACKET) return info.Env().Null();
  struct tpacket_stats_v3 st {};
  socklen_t l = sizeof st;
  if (getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &l) != 0) ThrowErrno(info.Env(), "getsockopt(PACKET_STATISTICS)", errno);
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("ifindex", Napi::Number::New(info.Env(), sll.sll_ifindex));
  out.Set("packets", Napi::Number::New(info.Env(), st.tp_packets));
  out.Set("drops", Napi::Number::New(info.Env(), st.tp_drops));
  return out;
}

// FD_CLOEXEC on or off: whether exec'd children inherit the fd.
Napi::Value SetCloexec(const Napi::CallbackInfo& info) {
  int fd = static_cast<int>(IntArg(info, 0, "fd"));
  bool on = info[1].ToBoolean().Value();
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) ThrowErrno(info.Env(), "fcntl(F_GETFD)", errno);
  if (fcntl(fd, F_SETFD, on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC)) < 0) ThrowErrno(info.Env(), "fcntl(F_SETFD)", errno);
  return info.Env().Undefined();
}

Napi::Value ProgGetFdById(const Napi::CallbackInfo& info) {
  uint32_t id = static_cast<uint32_t>(IntArg(info, 0, "id"));
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0) ThrowErrno(info.Env(), "bpf_prog_get_fd_by_id", errno);
  return Napi::Number::New(info.Env(), fd);
}

// ---------------------------------------------------------------- network namespaces
// setns(2) switches only the calling thread. TypeScript calls enter/restore
// around synchronous work on the JS thread; asynchronous test runs switch the
// worker thread themselves (see TestRunWorker).

int EnterNetns(const std::string& path, std::string* errOp) {
  int saved = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (saved < 0) {
    *errOp = "open(/proc/thread-self/ns/net)";
    return -errno;
  }
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int e = errno;
    close(saved);
    *errOp = "open network namespace " + path;
    return -e;
  }
  int rc = setns(target, CLONE_NEWNET);
  int e = errno;
  close(target);
  if (rc) {
    close(saved);
    *errOp = "setns(" + path + ")";
    return -e;
  }
  return saved;
}

int RestoreNetns(int saved) {
  int rc = setns(saved, CLONE_NEWNET);
  int e = errno;
  close(saved);
  return rc ? -e : 0;
}

Napi::Value NetnsEnter(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "namespace path");
  std::string op;
  int saved = EnterNetns(path, &op);
  if (saved < 0) ThrowErrno(info.Env(), op, saved);
  return Napi::Number::New(info.Env(), saved);
}

Napi::Value NetnsRestore(const Napi::CallbackInfo& info) {
  int saved = static_cast<int>(IntArg(info, 0, "saved fd"));
  int rc = RestoreNetns(saved);
  if (rc) ThrowErrno(info.Env(), "setns(restore)", rc);
  return info.Env().Undefined();
}

// ---------------------------------------------------------------- netlink
// Requests on a fresh netlink socket of `protocol`, in a network namespace. `messages` holds `count`
// complete nlmsghdr-framed requests, nlmsg_seq = index + 1; TypeScript
// encodes them. A request ends with its acknowledgement (NLMSG_ERROR; send
// it with NLM_F_ACK) or, for a dump, with NLMSG_DONE. They go out `window`
// at a time (several in one sendto, which the kernel handles one after
// another; a socket runs one dump at a time, so dumps go with window 1) and
// every request of a window has ended before the next is sent, so the
// receive buffer never overflows. Returns { errnos: one per request (0:
// done), replies: every other message received, in order, framed as the
// kernel sent them }. Used for ctnetlink requests the conntrack tool makes
// as whole-table dumps (exact gets and deletes, filtered dumps).
struct NetlinkArgs {
  std::string netns;  // empty: the thread's namespace
  int protocol = 0;
  std::vector<uint8_t> messages;
  std::vector<size_t> starts;
  size_t window = 1;
  // results
  std::vector<int32_t> errnos;
  std::vector<uint8_t> replies;
  int err = 0;
  std::string errOp;
};

void ParseNetlink(const Napi::CallbackInfo& info, NetlinkArgs& a, size_t first) {
  Napi::Env env = info.Env();
  a.protocol = static_cast<int>(IntArg(info, first, "protocol"));
  auto messages = BufferArg(info, first + 1, "messages");
  size_t count = static_cast<size_t>(IntArg(info, first + 2, "count"));
  a.window = std::max<size_t>(1, static_cast<size_t>(IntArg(info, first + 3, "window")));
  a.messages.assign(messages.Data(), messages.Data() + messages.Length());
  // where each message starts (framing checked before anything is sent)
  size_t size = a.messages.size();
  for (size_t off = 0; off < size && a.starts.size() < count;) {
    if (size - off < sizeof(nlmsghdr)) break;
    uint32_t len;
    memcpy(&len, a.messages.data() + off, sizeof(len));
    if (len < sizeof(nlmsghdr) || len > size - off) break;
    a.starts.push_back(off);
    off += NLMSG_ALIGN(len);
  }
  if (a.starts.size() != count) ThrowErrno(env, "netlink: messages are not " + std::to_string(count) + " framed requests", EINVAL);
}

void NetlinkExchange(NetlinkArgs& a) {
  size_t count = a.starts.size();
  a.errnos.assign(count, -1);  // -1: not answered (yet)
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, a.protocol);
  if (fd < 0) {
    a.err = -errno;
    a.errOp = "socket(AF_NETLINK)";
    return;
  }
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  int one = 1;
  // acknowledgements without the request echoed back
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) < 0) {
    a.err = -errno;
    a.errOp = "bind(AF_NETLINK)";
    return;
  }
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  std::vector<uint8_t> rx(1 << 16);
  const uint8_t* data = a.messages.data();
  for (size_t first = 0; first < count; first += a.window) {
    size_t last = std::min(count, first + a.window);
    size_t from = a.starts[first];
    size_t to = last < count ? a.starts[last] : a.messages.size();
    if (sendto(fd, data + from, to - from, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel)) < 0) {
      a.err = -errno;
      a.errOp = "sendto(netlink)";
      return;
    }
    size_t pending = last - first;
    while (pending > 0) {
      ssize_t n = recv(fd, rx.data(), rx.size(), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        a.err = -errno;
        a.errOp = "recv(netlink)";
        return;
      }
      int left = static_cast<int>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(rx.data()); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
        size_t seq = h->nlmsg_seq;
        if (seq < first + 1 || seq > last) continue;
        if (h->nlmsg_type != NLMSG_ERROR && h->nlmsg_type != NLMSG_DONE) {
          const uint8_t* m = reinterpret_cast<const uint8_t*>(h);
          a.replies.insert(a.replies.end(), m, m + NLMSG_ALIGN(h->nlmsg_len));
          continue;
        }
        // NLMSG_ERROR carries the (negative) errno first, NLMSG_DONE the dump's status
        int e = 0;
        if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(int))) memcpy(&e, NLMSG_DATA(h), sizeof(int));
        if (a.errnos[seq - 1] == -1) pending--;
        a.errnos[seq - 1] = -e;
      }
    }
  }
}

Napi::Value NetlinkResult(Napi::Env env, NetlinkArgs& a) {
  if (a.err) throw ErrnoError(env, a.errOp, a.err);
  auto errnos = Napi::Int32Array::New(env, a.errnos.size());
  for (size_t i = 0; i < a.errnos.size(); i++) errnos[i] = a.errnos[i];
  Napi::Object out = Napi::Object::New(env);
  out.Set("errnos", errnos);
  out.Set("replies", Napi::Buffer<uint8_t>::Copy(env, a.replies.data(), a.replies.size()));
  return out;
}

// On a libuv worker thread, which enters `netns` (a path; "" = the
// process's namespace) for the exchange and moves back; a thread that cannot
// move back must not run anything else. The JS thread never waits on the kernel.
class NetlinkWorker : public Napi::AsyncWorker {
 public:
  NetlinkWorker(Napi::Env env, NetlinkArgs&& a) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), args_(std::move(a)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    int saved = -1;
    if (!args_.netns.empty()) {
      saved = EnterNetns(args_.netns, &args_.errOp);
      if (saved < 0) {
        args_.err = saved;
        return;
      }
    }
    NetlinkExchange(args_);
    if (saved >= 0 && RestoreNetns(saved) != 0) abort();
  }
  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(NetlinkResult(env, args_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  NetlinkArgs args_;
};

Napi::Value NetlinkTransactAsync(const Napi::CallbackInfo& info) {
  NetlinkArgs a;
  a.netns = StringArg(info, 0, "namespace path (\"\": this process's)");
  ParseNetlink(info, a, 1);
  auto* w = new NetlinkWorker(info.Env(), std::move(a));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// ---------------------------------------------------------------- TUN devices
// Opens /dev/net/tun and attaches it to a TUN interface of the calling
// thread's network namespace (TUNSETIFF, IFF_TUN | IFF_NO_PI: one IP packet
// per read and write, no packet-information header), creating it if it does
// not exist. Returns the (blocking, close-on-exec) fd and the interface's
// name as the kernel gave it; the interface goes when the last fd closes
// (unless made persistent elsewhere).

Napi::Value TunOpen(const Napi::CallbackInfo& info) {
  std::string name = StringArg(info, 0, "interface name");
  if (name.empty() || name.size() >= IFNAMSIZ)
    throw Napi::RangeError::New(info.Env(), "interface name must be 1 to " + std::to_string(IFNAMSIZ - 1) + " bytes");
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) ThrowErrno(info.Env(), "open(/dev/net/tun)", errno);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  memcpy(ifr.ifr_name, name.data(), name.size());
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    ThrowErrno(info.Env(), "ioctl(TUNSETIFF, " + name + ")", e);
  }
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("fd", Napi::Number::New(info.Env(), fd));
  out.Set("name", Napi::String::New(info.Env(), std::string(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ))));
  return out;
}

Napi::Value IfNameToIndex(const Napi::CallbackInfo& info) {
  std::string name = StringArg(info, 0, "interface name");
  unsigned idx = if_nametoindex(name.c_str());
  if (idx == 0) ThrowErrno(info.Env(), "if_nametoindex(" + name + ")", errno);
  return Napi::Number::New(info.Env(), idx);
}

// SIOCGIFFLAGS and ETHTOOL_GLINK in the thread's network namespace: {up:
// IFF_UP, running: IFF_RUNNING, carrier: the link (for a veth, its peer
// up)}. System calls where `ip link` costs a process.
Napi::Value IfFlags(const Napi::CallbackInfo& info) {
  std::string name = StringArg(info, 0, "interface name");
  if (name.size() >= IFNAMSIZ) ThrowErrno(info.Env(), "SIOCGIFFLAGS(" + name + "): name too long", ENAMETOOLONG);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(info.Env(), "socket", errno);
  struct ifreq ifr {};
  memcpy(ifr.ifr_name, name.c_str(), name.size() + 1);
  int rc = ioctl(fd, SIOCGIFFLAGS, &ifr);
  int e = errno;
  bool up = (ifr.ifr_flags & IFF_UP) != 0;
  bool running = (ifr.ifr_flags & IFF_RUNNING) != 0;
  // the carrier itself (IFF_RUNNING follows it only once linkwatch ran)
  struct ethtool_value link {};
  link.cmd = ETHTOOL_GLINK;
  ifr.ifr_data = reinterpret_cast<char*>(&link);
  bool carrier = rc == 0 && ioctl(fd, SIOCETHTOOL, &ifr) == 0 ? link.data != 0 : running;
  close(fd);
  if (rc < 0) ThrowErrno(info.Env(), "SIOCGIFFLAGS(" + name + ")", e);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("up", up);
  o.Set("running", running);
  o.Set("carrier", carrier);
  return o;
}

// ---------------------------------------------------------------- XDP

// bpf_link based attach: detached when the last fd/pin goes away.
Napi::Value XdpLinkCreate(const Napi::CallbackInfo& info) {
  int progFd = static_cast<int>(IntArg(info, 0, "program fd"));
  int ifindex = static_cast<int>(IntArg(info, 1, "ifindex"));
  uint32_t flags = static_cast<uint32_t>(IntArg(info, 2, "flags"));
  LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = flags);
  int fd = bpf_link_create(progFd, ifindex, BPF_XDP, &opts);
  if (fd < 0) ThrowErrno(info.Env(), "bpf_link_create(xdp)", fd);
  return Napi::Number::New(info.Env(), fd);
}

// A raw tracepoint (BPF_RAW_TRACEPOINT_OPEN): the returned fd is a link,
// detached when its last fd/pin goes away.
Napi::Value RawTracepointOpen(const Napi::CallbackInfo& info) {
  int progFd = static_cast<int>(IntArg(info, 0, "program fd"));
  std::string name = StringArg(info, 1, "tracepoint name");
  int fd = bpf_raw_tracepoint_open(name.c_str(), progFd);
  if (fd < 0) ThrowErrno(info.Env(), "bpf_raw_tracepoint_open(" + name + ")", fd);
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value LinkUpdate(const Napi::CallbackInfo& info) {
  int linkFd = static_cast<int>(IntArg(info, 0, "link fd"));
  int progFd = static_cast<int>(IntArg(info, 1, "program fd"));
  int oldFd = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : -1;
  LIBBPF_OPTS(bpf_link_update_opts, opts);
  if (oldFd >= 0) {
    opts.flags = BPF_F_REPLACE;
    opts.old_prog_fd = static_cast<uint32_t>(oldFd);
  }
  int err = bpf_link_update(linkFd, progFd, &opts);
  if (err) ThrowErrno(info.Env(), "bpf_link_update", err);
  return info.Env().Undefined();
}

Napi::Value LinkDetach(const Napi::CallbackInfo& info) {
  int linkFd = static_cast<int>(IntArg(info, 0, "link fd"));
  int err = bpf_link_detach(linkFd);
  if (err) ThrowErrno(info.Env(), "bpf_link_detach", err);
  return info.Env().Undefined();
}

// Netlink attach: survives the process (like `ip link set dev X xdp ...`).
Napi::Value XdpAttach(const Napi::CallbackInfo& info) {
  int ifindex = static_cast<int>(IntArg(info, 0, "ifindex"));
  int progFd = static_cast<int>(IntArg(info, 1, "program fd"));
  uint32_t flags = static_cast<uint32_t>(IntArg(info, 2, "flags"));
  int oldFd = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().Int32Value() : -1;
  LIBBPF_OPTS(bpf_xdp_attach_opts, opts);
  if (oldFd >= 0) {
    flags |= XDP_FLAGS_REPLACE;
    opts.old_prog_fd = oldFd;
  }
  int err = bpf_xdp_attach(ifindex, progFd, flags, &opts);
  if (err) ThrowErrno(info.Env(), "bpf_xdp_attach", err);
  return info.Env().Undefined();
}

Napi::Value XdpDetach(const Napi::CallbackInfo& info) {
  int ifindex = static_cast<int>(IntArg(info, 0, "ifindex"));
  uint32_t flags = static_cast<uint32_t>(IntArg(info, 1, "flags"));
  int err = bpf_xdp_detach(ifindex, flags, nullptr);
  if (err) ThrowErrno(info.Env(), "bpf_xdp_detach", err);
  return info.Env().Undefined();
}

Napi::Value XdpQuery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int ifindex = static_cast<int>(IntArg(info, 0, "ifindex"));
  LIBBPF_OPTS(bpf_xdp_query_opts, opts);
  int err = bpf_xdp_query(ifindex, 0, &opts);
  if (err) ThrowErrno(env, "bpf_xdp_query", err);
  Napi::Object o = Napi::Object::New(env);
  o.Set("progId", opts.prog_id);
  o.Set("driverProgId", opts.drv_prog_id);
  o.Set("genericProgId", opts.skb_prog_id);
  o.Set("hardwareProgId", opts.hw_prog_id);
  o.Set("attachMode", opts.attach_mode);
  return o;
}

// ---------------------------------------------------------------- tc (clsact)

bpf_tc_attach_point AttachPoint(Napi::Env env, const std::string& s) {
  if (s == "ingress") return BPF_TC_INGRESS;
  if (s == "egress") return BPF_TC_EGRESS;
  throw Napi::TypeError::New(env, "tc attach point must be 'ingress' or 'egress'");
}

// tcAttach(ifindex, point, progFd, handle, priority, replace) -> {handle, priority, progId}
Napi::Value TcAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int ifindex = static_cast<int>(IntArg(info, 0, "ifindex"));
  auto point = AttachPoint(env, StringArg(info, 1, "attach point"));
  int progFd = static_cast<int>(IntArg(info, 2, "program fd"));
  uint32_t handle = static_cast<uint32_t>(IntArg(info, 3, "handle"));
  uint32_t priority = static_cast<uint32_t>(IntArg(info, 4, "priority"));
  bool replace = info.Length() > 5 && info[5].ToBoolean().Value();
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
  int err = bpf_tc_hook_create(&hook);
  if (err && err != -EEXIST) ThrowErrno(env, "bpf_tc_hook_create", err);
  LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = progFd, .flags = replace ? static_cast<__u32>(BPF_TC_F_REPLACE) : 0u,
              .handle = handle, .priority = priority);
  err = bpf_tc_attach(&hook, &opts);
  if (err) ThrowErrno(env, "bpf_tc_attach", err);
  Napi::Object o = Napi::Object::New(env);
  o.Set("handle", opts.handle);
  o.Set("priority", opts.priority);
  o.Set("progId", opts.prog_id);
  return o;
}

Napi::Value TcDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int ifindex = static_cast<int>(IntArg(info, 0, "ifindex"));
  auto point = AttachPoint(env, StringArg(info, 1, "attach point"));
  uint32_t handle = static_cast<uint32_t>(IntArg(info, 2, "handle"));
  uint32_t priority = static_cast<uint32_t>(IntArg(info, 3, "priority"));
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = priority);
  int err = bpf_tc_detach(&hook, &opts);
  if (err) ThrowErrno(env, "bpf_tc_detach", err);
  return env.Undefined();
}

Napi::Value TcQuery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int ifindex = static_cast<int>(IntArg(info, 0, "ifindex"));
  auto point = AttachPoint(env, StringArg(info, 1, "attach point"));
  uint32_t handle = static_cast<uint32_t>(IntArg(info, 2, "handle"));
  uint32_t priority = static_cast<uint32_t>(IntArg(info, 3, "priority"));
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = priority);
  int err = bpf_tc_query(&hook, &opts);
  if (err == -ENOENT || err == -EINVAL) return env.Null();
  if (err) ThrowErrno(env, "bpf_tc_query", err);
  Napi::Object o = Napi::Object::New(env);
  o.Set("progId", opts.prog_id);
  return o;
}

// Removes the clsact qdisc (and with it every filter on both hooks).
Napi::Value TcHookDestroy(const Napi::CallbackInfo& info) {
  int ifindex = static_cast<int>(IntArg(info, 0, "ifindex"));
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
              .attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
  int err = bpf_tc_hook_destroy(&hook);
  if (err && err != -ENOENT && err != -EINVAL) ThrowErrno(info.Env(), "bpf_tc_hook_destroy", err);
  return info.Env().Undefined();
}

// ---------------------------------------------------------------- BPF_PROG_TEST_RUN

struct TestRunArgs {
  int progFd = -1;
  std::vector<uint8_t> dataIn, ctxIn, dataOut, ctxOut;
  bool hasDataIn = false, hasCtxIn = false;
  uint32_t repeat = 0, flags = 0, batchSize = 0, cpu = 0;
  std::string netns;
  // results
  int err = 0;
  std::string errOp;
  uint32_t retval = 0, duration = 0, dataOutSize = 0, ctxOutSize = 0;
};

void ParseTestRun(const Napi::CallbackInfo& info, TestRunArgs& a) {
  Napi::Env env = info.Env();
  a.progFd = static_cast<int>(IntArg(info, 0, "program fd"));
  if (info.Length() < 2 || !info[1].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
  Napi::Object o = info[1].As<Napi::Object>();
  auto buf = [&](const char* k, std::vector<uint8_t>& dst, bool& has) {
    Napi::Value v = o.Get(k);
    if (v.IsBuffer()) {
      auto b = v.As<Napi::Buffer<uint8_t>>();
      dst.assign(b.Data(), b.Data() + b.Length());
      has = true;
    }
  };
  auto num = [&](const char* k) -> uint32_t {
    Napi::Value v = o.Get(k);
    return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : 0;
  };
  buf("dataIn", a.dataIn, a.hasDataIn);
  buf("ctxIn", a.ctxIn, a.hasCtxIn);
  a.dataOut.resize(num("dataOutSize"));
  a.ctxOut.resize(num("ctxOutSize"));
  a.repeat = num("repeat");
  a.flags = num("flags");
  a.batchSize = num("batchSize");
  a.cpu = num("cpu");
  Napi::Value ns = o.Get("netns");
  if (ns.IsString()) a.netns = ns.As<Napi::String>().Utf8Value();
}

// Points opts at the buffers of `a` (inputs, output room) and copies its settings.
void FillTestRunOpts(TestRunArgs& a, bpf_test_run_opts& opts) {
  if (a.hasDataIn) {
    opts.data_in = a.dataIn.data();
    opts.data_size_in = static_cast<uint32_t>(a.dataIn.size());
  }
  if (!a.dataOut.empty()) {
    opts.data_out = a.dataOut.data();
    opts.data_size_out = static_cast<uint32_t>(a.dataOut.size());
  }
  if (a.hasCtxIn) {
    opts.ctx_in = a.ctxIn.data();
    opts.ctx_size_in = static_cast<uint32_t>(a.ctxIn.size());
  }
  if (!a.ctxOut.empty()) {
    opts.ctx_out = a.ctxOut.data();
    opts.ctx_size_out = static_cast<uint32_t>(a.ctxOut.size());
  }
  opts.repeat = static_cast<int>(a.repeat);
  opts.flags = a.flags;
  opts.batch_size = a.batchSize;
  opts.cpu = a.cpu;
}

// Runs body() in a.netns (if any) on this thread, then moves the thread back.
template <typename Body>
void InTestRunNetns(TestRunArgs& a, Body body) {
  int saved = -1;
  if (!a.netns.empty()) {
    saved = EnterNetns(a.netns, &a.errOp);
    if (saved < 0) {
      a.err = saved;
      return;
    }
  }
  body();
  if (saved >= 0) {
    int rc = RestoreNetns(saved);
    // A thread we cannot move back must not run anything else.
    if (rc) abort();
  }
}

void ExecuteTestRun(TestRunArgs& a) {
  InTestRunNetns(a, [&] {
    LIBBPF_OPTS(bpf_test_run_opts, opts);
    FillTestRunOpts(a, opts);
    int err = bpf_prog_test_run_opts(a.progFd, &opts);
    if (err) {
      a.err = err;
      a.errOp = "bpf_prog_test_run_opts";
    } else {
      a.retval = opts.retval;
      a.duration = opts.duration;
      a.dataOutSize = opts.data_size_out;
      a.ctxOutSize = opts.ctx_size_out;
    }
  });
}

Napi::Value TestRunResult(Napi::Env env, TestRunArgs& a) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("retval", a.retval);
  o.Set("duration", a.duration);
  if (!a.dataOut.empty())
    o.Set("dataOut", Napi::Buffer<uint8_t>::Copy(env, a.dataOut.data(), std::min<size_t>(a.dataOutSize, a.dataOut.size())));
  if (!a.ctxOut.empty())
    o.Set("ctxOut", Napi::Buffer<uint8_t>::Copy(env, a.ctxOut.data(), std::min<size_t>(a.ctxOutSize, a.ctxOut.size())));
  return o;
}

Napi::Value ProgTestRun(const Napi::CallbackInfo& info) {
  TestRunArgs a;
  ParseTestRun(info, a);
  ExecuteTestRun(a);
  if (a.err) ThrowErrno(info.Env(), a.errOp, a.err);
  return TestRunResult(info.Env(), a);
}

// Runs on a libuv worker thread so long live-frames runs (traffic generation,
// replay of a big ring) do not stall the event loop.
class TestRunWorker : public Napi::AsyncWorker {
 public:
  TestRunWorker(Napi::Env env, TestRunArgs&& a)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), args_(std::move(a)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override { ExecuteTestRun(args_); }
  void OnOK() override {
    Napi::Env env = Env();
    if (args_.err) {
      deferred_.Reject(ErrnoError(env, args_.errOp, args_.err).Value());
    } else {
      deferred_.Resolve(TestRunResult(env, args_));
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  TestRunArgs args_;
};

Napi::Value ProgTestRunAsync(const Napi::CallbackInfo& info) {
  TestRunArgs a;
  ParseTestRun(info, a);
  auto* w = new TestRunWorker(info.Env(), std::move(a));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// ---------------------------------------------------------------- paced test runs
// "Run this program with live frames at N frames/s, in runs of `chunk`
// frames, until `maxFrames` (0: no limit) or stop()". Pacing is on a native
// thread with clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) against a
// schedule, so a late wake-up is made up by the next runs; a thread kept off
// the CPU for longer than `maxLagNs` does not make up the rest (its frames
// would leave as one burst far above the rate): the schedule moves on, and
// the time skipped is reported (`slippedNs`). The JS event loop never paces. Rates and sizes are chosen in
// TypeScript (src/traffic/generator.ts).

struct PacedControl {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> runs{0};
};

struct PacedArgs {
  TestRunArgs run;
  double framesPerSecond = 0;
  uint32_t chunk = 0;
  uint64_t maxFrames = 0;
  uint64_t maxLagNs = 0;
  std::shared_ptr<PacedControl> ctl;
  uint64_t elapsedNs = 0;
  uint64_t slippedNs = 0;
};

uint64_t MonotonicNs() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<uint64_t>(t.tv_sec) * 1000000000ull + static_cast<uint64_t>(t.tv_nsec);
}

void ExecutePaced(PacedArgs& p) {
  TestRunArgs& a = p.run;
  InTestRunNetns(a, [&] {
    LIBBPF_OPTS(bpf_test_run_opts, opts);
    FillTestRunOpts(a, opts);
    const uint64_t t0 = MonotonicNs();
    uint64_t base = t0;  // the schedule: frame k is due at base + k * nsPerFrame
    const double nsPerFrame = 1e9 / p.framesPerSecond;
    uint64_t sent = 0;
    while (!p.ctl->stop.load(std::memory_order_relaxed) && (p.maxFrames == 0 || sent < p.maxFrames)) {
      uint64_t n = p.chunk;
      if (p.maxFrames != 0 && p.maxFrames - sent < n) n = p.maxFrames - sent;
      // the run of frames [sent, sent + n) is due when its last frame is
      uint64_t due = base + static_cast<uint64_t>(std::llround(static_cast<double>(sent + n) * nsPerFrame));
      const uint64_t now = MonotonicNs();
      if (now > due + p.maxLagNs) {
        p.slippedNs += now - due - p.maxLagNs;
        base += now - due - p.maxLagNs;
        due = now - p.maxLagNs;
      }
      if (now < due) {
        timespec ts{static_cast<time_t>(due / 1000000000ull), static_cast<long>(due % 1000000000ull)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
        }
        if (p.ctl->stop.load(std::memory_order_relaxed)) break;
      }
      opts.repeat = static_cast<int>(n);
      int err = bpf_prog_test_run_opts(a.progFd, &opts);
      if (err) {
        a.err = err;
        a.errOp = "bpf_prog_test_run_opts";
        break;
      }
      sent += n;
      p.ctl->sent.store(sent, std::memory_order_relaxed);
      p.ctl->runs.fetch_add(1, std::memory_order_relaxed);
    }
    p.elapsedNs = MonotonicNs() - t0;
  });
}

// One paced run: its own thread (not a libuv pool thread, which a run would
// hold for as long as it goes), settled on the JS thread through a
// thread-safe function.
struct PacedJob {
  PacedArgs args;
  Napi::Promise::Deferred deferred;
  Napi::ThreadSafeFunction tsfn;
};

void SettlePaced(Napi::Env env, PacedJob* job) {
  PacedArgs& a = job->args;
  const double frames = static_cast<double>(a.ctl->sent.load());
  if (a.run.err) {
    Napi::Error e = ErrnoError(env, a.run.errOp, a.run.err);
    e.Set("frames", Napi::Number::New(env, frames));
    job->deferred.Reject(e.Value());
    return;
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("frames", Napi::Number::New(env, frames));
  o.Set("runs", Napi::Number::New(env, static_cast<double>(a.ctl->runs.load())));
  o.Set("elapsedNs", Napi::Number::New(env, static_cast<double>(a.elapsedNs)));
  o.Set("slippedNs", Napi::Number::New(env, static_cast<double>(a.slippedNs)));
  job->deferred.Resolve(o);
}

// progTestRunPaced(progFd, testRunOptions, { framesPerSecond, chunk, maxFrames, maxLagNs })
//   -> { done: Promise<{ frames, runs, elapsedNs, slippedNs }>, stop(), sent() }
Napi::Value ProgTestRunPaced(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  PacedArgs p;
  ParseTestRun(info, p.run);
  if (!p.run.hasDataIn) throw Napi::TypeError::New(env, "dataIn must be a Buffer");
  if (info.Length() < 3 || !info[2].IsObject()) throw Napi::TypeError::New(env, "pacing must be an object");
  Napi::Object po = info[2].As<Napi::Object>();
  auto num = [&](const char* k) -> double {
    Napi::Value v = po.Get(k);
    if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string("pacing.") + k + " must be a number");
    return v.As<Napi::Number>().DoubleValue();
  };
  p.framesPerSecond = num("framesPerSecond");
  double chunk = num("chunk");
  double maxFrames = num("maxFrames");
  double maxLagNs = num("maxLagNs");
  if (!(maxLagNs >= 0)) throw Napi::RangeError::New(env, "pacing.maxLagNs must be >= 0");
  p.maxLagNs = static_cast<uint64_t>(maxLagNs);
  if (!(p.framesPerSecond > 0)) throw Napi::RangeError::New(env, "pacing.framesPerSecond must be > 0");
  if (!(chunk >= 1 && chunk <= 1e9)) throw Napi::RangeError::New(env, "pacing.chunk must be in 1..1e9");
  if (!(maxFrames >= 0)) throw Napi::RangeError::New(env, "pacing.maxFrames must be >= 0");
  p.chunk = static_cast<uint32_t>(chunk);
  p.maxFrames = static_cast<uint64_t>(maxFrames);
  auto ctl = std::make_shared<PacedControl>();
  p.ctl = ctl;
  auto* job = new PacedJob{std::move(p), Napi::Promise::Deferred::New(env), Napi::ThreadSafeFunction()};
  job->tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "sharp-paced-run", 0, 1);
  Napi::Object handle = Napi::Object::New(env);
  handle.Set("done", job->deferred.Promise());
  handle.Set("stop", Napi::Function::New(env, [ctl](const Napi::CallbackInfo& i) -> Napi::Value {
               ctl->stop.store(true);
               return i.Env().Undefined();
             }, "stop"));
  handle.Set("sent", Napi::Function::New(env, [ctl](const Napi::CallbackInfo& i) -> Napi::Value {
               return Napi::Number::New(i.Env(), static_cast<double>(ctl->sent.load()));
             }, "sent"));
  std::thread([job] {
    ExecutePaced(job->args);
    Napi::ThreadSafeFunction tsfn = job->tsfn;  // job is gone once settled
    tsfn.BlockingCall([job](Napi::Env env, Napi::Function) {
      SettlePaced(env, job);
      delete job;
    });
    tsfn.Release();
  }).detach();
  return handle;
}

// ---------------------------------------------------------------- ring buffer
// The ring buffer's epoll fd is watched by libuv on the JS thread: no busy
// polling. All samples available at wake-up are copied and delivered to JS in
// one call, in ring order.

class RingBuffer : public Napi::ObjectWrap<RingBuffer> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "RingBuffer",
                       {InstanceMethod("consume", &RingBuffer::Consume), InstanceMethod("close", &RingBuffer::Close),
                        InstanceMethod("ref", &RingBuffer::Ref), InstanceMethod("unref", &RingBuffer::Unref)});
  }

  // new RingBuffer(mapFd, onSamples(buffers[]))
  explicit RingBuffer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RingBuffer>(info) {
    Napi::Env env = info.Env();
    int mapFd = static_cast<int>(IntArg(info, 0, "map fd"));
    if (info.Length() < 2 || !info[1].IsFunction()) throw Napi::TypeError::New(env, "callback must be a function");
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    rb_ = ring_buffer__new(mapFd, &RingBuffer::OnSample, this, nullptr);
    if (rb_ == nullptr) ThrowErrno(env, "ring_buffer__new", errno);
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    poll_ = new uv_poll_t;
    poll_->data = this;
    int err = uv_poll_init(loop, poll_, ring_buffer__epoll_fd(rb_));
    if (err == 0) err = uv_poll_start(poll_, UV_READABLE, &RingBuffer::OnReadable);
    if (err != 0) {
      delete poll_;
      poll_ = nullptr;
      ring_buffer__free(rb_);
      rb_ = nullptr;
      throw Napi::Error::New(env, std::string("uv_poll: ") + uv_strerror(err));
    }
    env_ = env;
    Napi::ObjectWrap<RingBuffer>::Ref();  // stay alive while the poll handle is open
  }

  ~RingBuffer() override { Shutdown(); }

 private:
  ring_buffer* rb_ = nullptr;
  uv_poll_t* poll_ = nullptr;
  Napi::FunctionReference callback_;
  Napi::Env env_ = nullptr;
  std::vector<std::vector<uint8_t>> pending_;

  static int OnSample(void* ctx, void* data, size_t size) {
    auto* self = static_cast<RingBuffer*>(ctx);
    auto* p = static_cast<uint8_t*>(data);
    self->pending_.emplace_back(p, p + size);
    return 0;
  }

  int Drain() {
    if (rb_ == nullptr) return 0;
    return ring_buffer__consume(rb_);
  }

  void Deliver() {
    if (pending_.empty()) return;
    Napi::HandleScope scope(env_);
    Napi::Array arr = Napi::Array::New(env_, pending_.size());
    for (size_t i = 0; i < pending_.size(); i++)
      arr.Set(i, Napi::Buffer<uint8_t>::Copy(env_, pending_[i].data(), pending_[i].size()));
    pending_.clear();
    callback_.MakeCallback(Value(), {arr});
  }

  static void OnReadable(uv_poll_t* handle, int status, int events) {
    auto* self = static_cast<RingBuffer*>(handle->data);
    if (status < 0 || self->rb_ == nullptr) return;
    self->Drain();
    self->Deliver();
  }

  Napi::Value Consume(const Napi::CallbackInfo& info) {
    int n = Drain();
    if (n < 0) ThrowErrno(info.Env(), "ring_buffer__consume", n);
    Deliver();
    return Napi::Number::New(info.Env(), n);
  }

  void Shutdown() {
    if (poll_ != nullptr) {
      uv_poll_stop(poll_);
      uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
      poll_ = nullptr;
    }
    if (rb_ != nullptr) {
      ring_buffer__free(rb_);
      rb_ = nullptr;
    }
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    bool wasOpen = poll_ != nullptr;
    Shutdown();
    if (wasOpen) Napi::ObjectWrap<RingBuffer>::Unref();
    return info.Env().Undefined();
  }

  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(poll_));
    return info.Env().Undefined();
  }

  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    return info.Env().Undefined();
  }
};

// ---------------------------------------------------------------- module

Napi::Value SetDebug(const Napi::CallbackInfo& info) {
  g_print_debug = info.Length() > 0 && info[0].ToBoolean().Value();
  return info.Env().Undefined();
}

Napi::Value LibbpfVersion(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), libbpf_version_string());
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  libbpf_set_print(PrintCallback);
  exports.Set("BpfObject", BpfObject::Init(env));
  exports.Set("RingBuffer", RingBuffer::Init(env));
#define EXPORT(name, fn) exports.Set(name, Napi::Function::New(env, fn, name))
  EXPORT("mapLookup", MapLookup);
  EXPORT("mapLookupAndDelete", MapLookupAndDelete);
  EXPORT("mapUpdate", MapUpdate);
  EXPORT("mapDelete", MapDelete);
  EXPORT("mapNextKey", MapNextKey);
  EXPORT("mapLookupBatch", MapLookupBatch);
  EXPORT("mapUpdateBatch", MapUpdateBatch);
  EXPORT("mapDeleteBatch", MapDeleteBatch);
  EXPORT("mapInfo", MapInfo);
  EXPORT("progInfo", ProgInfo);
  EXPORT("linkInfo", LinkInfo);
  EXPORT("numPossibleCpus", NumPossibleCpus);
  EXPORT("cpuBarrier", CpuBarrier);
  EXPORT("objPin", ObjPin);
  EXPORT("objGet", ObjGet);
  EXPORT("closeFd", CloseFd);
  EXPORT("flock", Flock);
  EXPORT("setCloexec", SetCloexec);
  EXPORT("pidfdOpen", PidfdOpen);
  EXPORT("pidfdGetfd", PidfdGetfd);
  EXPORT("packetSocketStats", PacketSocketStats);
  EXPORT("progGetFdById", ProgGetFdById);
  EXPORT("netnsEnter", NetnsEnter);
  EXPORT("netnsRestore", NetnsRestore);
  EXPORT("ifNameToIndex", IfNameToIndex);
  EXPORT("netlinkTransactAsync", NetlinkTransactAsync);
  EXPORT("ifFlags", IfFlags);
  EXPORT("tunOpen", TunOpen);
  EXPORT("xdpLinkCreate", XdpLinkCreate);
  EXPORT("rawTracepointOpen", RawTracepointOpen);
  EXPORT("linkUpdate", LinkUpdate);
  EXPORT("linkDetach", LinkDetach);
  EXPORT("xdpAttach", XdpAttach);
  EXPORT("xdpDetach", XdpDetach);
  EXPORT("xdpQuery", XdpQuery);
  EXPORT("tcAttach", TcAttach);
  EXPORT("tcDetach", TcDetach);
  EXPORT("tcQuery", TcQuery);
  EXPORT("tcHookDestroy", TcHookDestroy);
  EXPORT("progTestRun", ProgTestRun);
  EXPORT("progTestRunAsync", ProgTestRunAsync);
  EXPORT("progTestRunPaced", ProgTestRunPaced);
  EXPORT("setDebug", SetDebug);
  EXPORT("libbpfVersion", LibbpfVersion);
#undef EXPORT
  return exports;
}

}  // namespace

NODE_API_MODULE(sharp_bpf, Init)
