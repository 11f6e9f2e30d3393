//! Calling a task component's exports (`celeriac:task/task`'s `tasks` and
//! `invoke`) without copying more of what the guest returns than the worker
//! will keep.
//!
//! wasmtime's generated bindings lift a returned `string` or `list<string>`
//! into host memory whole: a guest returning a 100 MiB exception message or
//! four million task names would cost the host that much (and more) before any
//! bound could apply. The return value cannot be read lazily either
//! (`WasmStr` views die with the guest's post-return cleanup, which wasmtime
//! runs as soon as the value is lifted). So the returned values are lifted
//! through the types here, which read the string's or list's length from
//! guest memory first and copy at most a fixed ceiling: [`GuestText`] keeps a
//! string whole if it fits, else (if asked) its head and tail; [`GuestNames`]
//! refuses a list longer than its ceiling without reading its elements. The
//! configured bounds ([`super::HostBounds`], at most these ceilings) then apply
//! to what was copied.

use wasmtime::AsContextMut;
use wasmtime::ValRaw;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{Component, ComponentExportIndex, ComponentType, Instance, Lift};

use super::bounds;

/// Most bytes of a success result copied out of a guest (`max_result_size`
/// can only be set lower); a longer result is measured, not copied.
pub const RESULT_CEILING: usize = bounds::DEFAULT_MAX_RESULT_SIZE;
/// Most bytes of an exception message or traceback copied out of a guest
/// (head and tail; `max_error_size` cannot be set higher).
pub const ERROR_CEILING: usize = 1 << 20;
/// Most task names a component's `tasks()` may return (`max_tasks_per_component`
/// cannot be set higher); a longer list is refused unread.
pub const TASKS_CEILING: usize = 10_000;
/// Most bytes of one task name copied out (one more than a name may have, so
/// a longer one is seen as such).
const TASK_NAME_CEILING: usize = bounds::MAX_TASK_NAME_LEN + 1;
/// Most bytes of an exception type or module name copied out.
const NAME_CEILING: usize = 1024;

/// The interface every task component exports.
const TASK_INTERFACE: &str = "celeriac:task/task@0.1.0";

/// A guest `string` copied out up to `MAX` bytes.
pub enum GuestText<const MAX: usize, const ENDS: bool> {
    /// The whole string.
    Whole(String),
    /// A string longer than `MAX` bytes: its length and (if `ENDS`, for UTF-8
    /// guests) its first and last `MAX / 2` bytes.
    Cut { len: usize, head: String, tail: String },
}

impl<const MAX: usize, const ENDS: bool> GuestText<MAX, ENDS> {
    /// Its length in the guest.
    pub fn guest_len(&self) -> usize {
        match self {
            GuestText::Whole(s) => s.len(),
            GuestText::Cut { len, .. } => *len,
        }
    }

    /// As text of at most `max` bytes, cut in the middle with a marker.
    pub fn into_bounded(self, max: usize) -> String {
        match self {
            GuestText::Whole(s) if s.len() <= max => s,
            GuestText::Whole(s) => super::bounds::truncate_middle(&s, max),
            GuestText::Cut { len, head, tail } => {
                let keep = max / 2;
                let head = super::bounds::truncate_end(&head, keep);
                let start = tail.len().saturating_sub(keep);
                let start = (start..=tail.len()).find(|i| tail.is_char_boundary(*i)).unwrap_or(tail.len());
                let tail = &tail[start..];
                super::bounds::cut_marked(head, len - head.len() - tail.len(), tail)
            }
        }
    }

    /// The head of the text (all of it if it was copied whole).
    pub fn into_head(self) -> String {
        match self {
            GuestText::Whole(s) => s,
            GuestText::Cut { head, .. } => head,
        }
    }

    /// Copy the string at `ptr`/`len` (the canonical ABI's pointer pair).
    fn lift(cx: &mut LiftContext<'_>, ty: InterfaceType, ptr: usize, len: usize) -> wasmtime::Result<Self> {
        use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
        /// Set in a compact-UTF-16 length when the string is UTF-16, not Latin-1.
        const UTF16_TAG: usize = 1 << 31;
        let bytes_len = match cx.options().string_encoding {
            StringEncoding::Utf8 => len,
            StringEncoding::Utf16 => len.saturating_mul(2),
            StringEncoding::CompactUtf16 if len & UTF16_TAG != 0 => (len ^ UTF16_TAG).saturating_mul(2),
            StringEncoding::CompactUtf16 => len,
        };
        if !matches!(cx.options().string_encoding, StringEncoding::Utf8) {
            // UTF-16 / Latin-1 guests (rare): wasmtime decodes them; only short
            // strings are copied, long ones are measured.
            if bytes_len > MAX {
                return Ok(GuestText::Cut { len: bytes_len, head: String::new(), tail: String::new() });
            }
            let lower = [ValRaw::u32(ptr as u32), ValRaw::u32(len as u32)];
            return Ok(GuestText::Whole(String::linear_lift_from_flat(cx, ty, &lower)?));
        }
        let memory = cx.memory();
        let Some(bytes) = ptr.checked_add(len).and_then(|end| memory.get(ptr..end)) else {
            wasmtime::bail!("string pointer/length out of bounds of memory");
        };
        if len <= MAX {
            let text = std::str::from_utf8(bytes)?.to_owned();
            cx.consume_fuel(len)?;
            return Ok(GuestText::Whole(text));
        }
        if !ENDS {
            return Ok(GuestText::Cut { len, head: String::new(), tail: String::new() });
        }
        let half = MAX / 2;
        let head = String::from_utf8_lossy(&bytes[..half]).into_owned();
        let tail = String::from_utf8_lossy(&bytes[len - half..]).into_owned();
        cx.consume_fuel(2 * half)?;
        Ok(GuestText::Cut { len, head, tail })
    }
}

/// The pointer pair in a flat lowered value.
fn pair_from_flat(src: &[ValRaw; 2]) -> (usize, usize) {
    (src[0].get_u32() as usize, src[1].get_u32() as usize)
}

/// The pointer pair stored in guest memory.
fn pair_from_memory(bytes: &[u8]) -> wasmtime::Result<(usize, usize)> {
    let word = |i: usize| -> wasmtime::Result<usize> {
        let b: [u8; 4] = bytes
            .get(i..i + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| wasmtime::format_err!("pointer pair out of bounds"))?;
        Ok(u32::from_le_bytes(b) as usize)
    };
    Ok((word(0)?, word(4)?))
}

// SAFETY: lowered and laid out exactly as `string` (a pointer pair), which
// `typecheck` requires; only lifting is implemented.
unsafe impl<const MAX: usize, const ENDS: bool> ComponentType for GuestText<MAX, ENDS> {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;
    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <String as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: reads only within guest memory, bounds-checked above.
unsafe impl<const MAX: usize, const ENDS: bool> Lift for GuestText<MAX, ENDS> {
    fn linear_lift_from_flat(cx: &mut LiftContext<'_>, ty: InterfaceType, src: &Self::Lower) -> wasmtime::Result<Self> {
        let (ptr, len) = pair_from_flat(src);
        Self::lift(cx, ty, ptr, len)
    }
    fn linear_lift_from_memory(cx: &mut LiftContext<'_>, ty: InterfaceType, bytes: &[u8]) -> wasmtime::Result<Self> {
        let (ptr, len) = pair_from_memory(bytes)?;
        Self::lift(cx, ty, ptr, len)
    }
}

/// A guest `list<string>` of task names: refused unread past `MAX` entries.
pub enum GuestNames<const MAX: usize> {
    /// The names (each copied up to [`TASK_NAME_CEILING`] bytes).
    Names(Vec<GuestText<TASK_NAME_CEILING, false>>),
    /// A list of this many entries, longer than `MAX`.
    TooMany(usize),
}

impl<const MAX: usize> GuestNames<MAX> {
    fn lift(cx: &mut LiftContext<'_>, ptr: usize, len: usize) -> wasmtime::Result<Self> {
        if len > MAX {
            return Ok(GuestNames::TooMany(len));
        }
        const PAIR: usize = 8;
        let end = len.checked_mul(PAIR).and_then(|n| n.checked_add(ptr));
        if end.is_none_or(|end| end > cx.memory().len()) || !ptr.is_multiple_of(4) {
            wasmtime::bail!("list pointer/length out of bounds of memory");
        }
        cx.consume_fuel_array(len, PAIR)?;
        let mut names = Vec::with_capacity(len);
        for i in 0..len {
            let (p, l) = pair_from_memory(&cx.memory()[ptr + i * PAIR..])?;
            names.push(GuestText::lift(cx, InterfaceType::String, p, l)?);
        }
        Ok(GuestNames::Names(names))
    }
}

// SAFETY: lowered and laid out exactly as `list<string>` (a pointer pair),
// which `typecheck` requires; only lifting is implemented.
unsafe impl<const MAX: usize> ComponentType for GuestNames<MAX> {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;
    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <Vec<String> as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: reads only within guest memory, bounds-checked above.
unsafe impl<const MAX: usize> Lift for GuestNames<MAX> {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        _ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        let (ptr, len) = pair_from_flat(src);
        Self::lift(cx, ptr, len)
    }
    fn linear_lift_from_memory(cx: &mut LiftContext<'_>, _ty: InterfaceType, bytes: &[u8]) -> wasmtime::Result<Self> {
        let (ptr, len) = pair_from_memory(bytes)?;
        Self::lift(cx, ptr, len)
    }
}

/// `task-error` as lifted from a guest.
#[derive(ComponentType, Lift)]
#[component(record)]
struct RawTaskError {
    #[component(name = "exc-type")]
    exc_type: GuestText<NAME_CEILING, true>,
    #[component(name = "exc-module")]
    exc_module: Option<GuestText<NAME_CEILING, true>>,
    message: GuestText<ERROR_CEILING, true>,
    traceback: Option<GuestText<ERROR_CEILING, true>>,
}

/// Where a component's two exports are, looked up once per compiled component.
#[derive(Clone, Copy)]
pub struct Exports {
    tasks: ComponentExportIndex,
    invoke: ComponentExportIndex,
}

impl Exports {
    /// The export indices of `component`; `None` if it lacks the interface
    /// (the world check at pre-link time reports that case in detail).
    pub fn of(component: &Component) -> Option<Exports> {
        let iface = component.get_export_index(None, TASK_INTERFACE)?;
        Some(Exports {
            tasks: component.get_export_index(Some(&iface), "tasks")?,
            invoke: component.get_export_index(Some(&iface), "invoke")?,
        })
    }
}

/// What `invoke` returned, copied out within the bounds.
pub enum Returned {
    /// A success result's JSON text.
    Json(String),
    /// A success result longer than the bound; only its length was read.
    TooLarge(usize),
    /// The guest's error (message and traceback already cut to their bound,
    /// type and module names to their first [`NAME_CEILING`] / 2 bytes if
    /// longer than [`NAME_CEILING`]; still to be mapped and
    /// escaped, see `outcome::raised`).
    Raised { exc_type: String, exc_module: Option<String>, message: String, traceback: Option<String> },
}

/// Call `invoke(name, args, kwargs)` on `instance` and copy out its result,
/// keeping at most `max_result` bytes of a success and `max_error` bytes of
/// each error field.
pub async fn invoke<T: Send + 'static>(
    mut store: impl AsContextMut<Data = T>,
    instance: &Instance,
    exports: &Exports,
    (name, args, kwargs): (&str, &str, &str),
    max_result: usize,
    max_error: usize,
) -> wasmtime::Result<Returned> {
    let max_error = max_error.min(ERROR_CEILING);
    type Ret = Result<GuestText<RESULT_CEILING, false>, RawTaskError>;
    let func = instance.get_typed_func::<(&str, &str, &str), (Ret,)>(&mut store, exports.invoke)?;
    let (ret,) = func.call_async(&mut store, (name, args, kwargs)).await?;
    Ok(match ret {
        Ok(GuestText::Whole(json)) if json.len() <= max_result => Returned::Json(json),
        Ok(too_large) => Returned::TooLarge(too_large.guest_len()),
        Err(e) => Returned::Raised {
            // Cut names keep their head: a longer name becomes a stand-in anyway.
            exc_type: e.exc_type.into_head(),
            exc_module: e.exc_module.map(GuestText::into_head),
            message: e.message.into_bounded(max_error),
            traceback: e.traceback.map(|t| t.into_bounded(max_error)),
        },
    })
}

/// Call `tasks()` on `instance` and copy out the names, refusing a list longer
/// than `max_tasks` or a name longer than [`bounds::MAX_TASK_NAME_LEN`].
pub async fn tasks<T: Send + 'static>(
    mut store: impl AsContextMut<Data = T>,
    instance: &Instance,
    exports: &Exports,
    max_tasks: usize,
) -> wasmtime::Result<Result<Vec<String>, String>> {
    let func = instance.get_typed_func::<(), (GuestNames<TASKS_CEILING>,)>(&mut store, exports.tasks)?;
    let (list,) = func.call_async(&mut store, ()).await?;
    let names = match list {
        GuestNames::Names(names) if names.len() <= max_tasks => names,
        GuestNames::Names(names) => return Ok(Err(too_many(names.len(), max_tasks))),
        GuestNames::TooMany(n) => return Ok(Err(too_many(n, max_tasks))),
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match name {
            GuestText::Whole(n) if n.len() <= bounds::MAX_TASK_NAME_LEN => out.push(n),
            long => {
                return Ok(Err(format!(
                    "declares a task name of {} bytes; the limit is {}",
                    long.guest_len(),
                    bounds::MAX_TASK_NAME_LEN
                )));
            }
        }
    }
    Ok(Ok(out))
}

fn too_many(n: usize, max: usize) -> String {
    format!("declares {n} tasks; a component may declare at most {max} (max_tasks_per_component)")
}
