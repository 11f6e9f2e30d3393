//! Calling a task component's exports (`celeriac:task/task`'s `tasks` and
//! `invoke`, in either version of the contract: 0.1.0 or 0.2.0) without
//! copying more of what the guest returns than the worker will keep.
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
/// Most arguments of one exception copied out (a longer list fails the call).
pub const ARGS_CEILING: usize = 64;
/// Most exception names one task may list in `autoretry-for`.
pub const AUTORETRY_CEILING: usize = 64;

/// The task interface of the current contract (`wit/task.wit`).
pub const TASK_INTERFACE: &str = "celeriac:task/task@0.2.0";
/// The task interface of the first contract (`wit/0.1.0/task.wit`).
pub const TASK_INTERFACE_V0_1: &str = "celeriac:task/task@0.1.0";

/// The version of the `celeriac:task` contract a component was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// `celeriac:task@0.1.0`: task names only, one-message exceptions.
    V0_1,
    /// `celeriac:task@0.2.0`: declared options, exception arguments, retries.
    V0_2,
}

impl Contract {
    /// The name of its task interface.
    pub fn interface(self) -> &'static str {
        match self {
            Contract::V0_1 => TASK_INTERFACE_V0_1,
            Contract::V0_2 => TASK_INTERFACE,
        }
    }
}

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

/// A guest `list<T>`: refused unread past `MAX` entries, else each element
/// lifted with `T`'s own (bounded) lifting.
pub enum GuestList<T, const MAX: usize> {
    /// The elements.
    Items(Vec<T>),
    /// A list of this many entries, longer than `MAX`.
    TooMany(usize),
}

impl<T: Lift, const MAX: usize> GuestList<T, MAX> {
    fn lift(cx: &mut LiftContext<'_>, ty: InterfaceType, ptr: usize, len: usize) -> wasmtime::Result<Self> {
        if len > MAX {
            return Ok(GuestList::TooMany(len));
        }
        let InterfaceType::List(i) = ty else { wasmtime::bail!("not a list type") };
        let elem = cx.types[i].element;
        let size = T::SIZE32;
        let end = len.checked_mul(size).and_then(|n| n.checked_add(ptr));
        if end.is_none_or(|end| end > cx.memory().len()) || !ptr.is_multiple_of(T::ALIGN32 as usize) {
            wasmtime::bail!("list pointer/length out of bounds of memory");
        }
        cx.consume_fuel_array(len, size)?;
        let mut items = Vec::with_capacity(len);
        for n in 0..len {
            let at = ptr + n * size;
            let bytes = cx.memory()[at..at + size].to_vec();
            items.push(T::linear_lift_from_memory(cx, elem, &bytes)?);
        }
        Ok(GuestList::Items(items))
    }
}

// SAFETY: lowered and laid out exactly as `list<T>` (a pointer pair), which
// `typecheck` requires; only lifting is implemented.
unsafe impl<T: ComponentType, const MAX: usize> ComponentType for GuestList<T, MAX> {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;
    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <Vec<T> as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: reads only within guest memory, bounds-checked above.
unsafe impl<T: Lift, const MAX: usize> Lift for GuestList<T, MAX> {
    fn linear_lift_from_flat(cx: &mut LiftContext<'_>, ty: InterfaceType, src: &Self::Lower) -> wasmtime::Result<Self> {
        let (ptr, len) = pair_from_flat(src);
        Self::lift(cx, ty, ptr, len)
    }
    fn linear_lift_from_memory(cx: &mut LiftContext<'_>, ty: InterfaceType, bytes: &[u8]) -> wasmtime::Result<Self> {
        let (ptr, len) = pair_from_memory(bytes)?;
        Self::lift(cx, ty, ptr, len)
    }
}

/// A bounded name (exception type, queue, rate limit) copied out of a guest.
type Name = GuestText<NAME_CEILING, true>;
/// A bounded exception argument (JSON text) copied out of a guest.
type Arg = GuestText<ERROR_CEILING, false>;

/// `task-error` (0.2.0) as lifted from a guest.
#[derive(ComponentType, Lift)]
#[component(record)]
struct RawTaskErrorV2 {
    #[component(name = "exc-type")]
    exc_type: Name,
    #[component(name = "exc-module")]
    exc_module: Option<Name>,
    message: GuestText<ERROR_CEILING, true>,
    args: Option<GuestList<Arg, ARGS_CEILING>>,
    traceback: Option<GuestText<ERROR_CEILING, true>>,
}

/// `retry-request` as lifted from a guest.
#[derive(ComponentType, Lift)]
#[component(record)]
struct RawRetryRequest {
    countdown: Option<f64>,
    eta: Option<Name>,
    exc: Option<RawTaskErrorV2>,
    #[component(name = "max-retries")]
    max_retries: Option<u32>,
}

/// `raised` as lifted from a guest.
#[derive(ComponentType, Lift)]
#[component(variant)]
enum RawRaised {
    #[component(name = "exception")]
    Exception(RawTaskErrorV2),
    #[component(name = "retry")]
    Retry(RawRetryRequest),
}

/// `task-options` as lifted from a guest.
#[derive(ComponentType, Lift)]
#[component(record)]
struct RawTaskOptions {
    #[component(name = "rate-limit")]
    rate_limit: Option<Name>,
    #[component(name = "time-limit")]
    time_limit: Option<f64>,
    #[component(name = "soft-time-limit")]
    soft_time_limit: Option<f64>,
    #[component(name = "max-retries")]
    max_retries: Option<u32>,
    #[component(name = "default-retry-delay")]
    default_retry_delay: Option<f64>,
    #[component(name = "autoretry-for")]
    autoretry_for: GuestList<Name, AUTORETRY_CEILING>,
    #[component(name = "retry-backoff")]
    retry_backoff: Option<u32>,
    #[component(name = "retry-backoff-max")]
    retry_backoff_max: Option<u32>,
    #[component(name = "retry-jitter")]
    retry_jitter: Option<bool>,
    #[component(name = "acks-late")]
    acks_late: Option<bool>,
    #[component(name = "ignore-result")]
    ignore_result: Option<bool>,
    queue: Option<Name>,
}

/// `task-info` as lifted from a guest.
#[derive(ComponentType, Lift)]
#[component(record)]
struct RawTaskInfo {
    name: GuestText<TASK_NAME_CEILING, false>,
    options: RawTaskOptions,
}

/// `task-error` (0.1.0) as lifted from a guest.
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
    contract: Contract,
    tasks: ComponentExportIndex,
    invoke: ComponentExportIndex,
}

impl Exports {
    /// The export indices of `component`, for the newest contract it exports
    /// (0.2.0, else 0.1.0); `None` if it exports neither task interface (the
    /// world check at pre-link time reports that case in detail).
    pub fn of(component: &Component) -> Option<Exports> {
        [Contract::V0_2, Contract::V0_1].into_iter().find_map(|contract| {
            let iface = component.get_export_index(None, contract.interface())?;
            Some(Exports {
                contract,
                tasks: component.get_export_index(Some(&iface), "tasks")?,
                invoke: component.get_export_index(Some(&iface), "invoke")?,
            })
        })
    }

    /// The contract the component was built for.
    pub fn contract(&self) -> Contract {
        self.contract
    }
}

/// An exception raised by a guest, copied out within the bounds (message and
/// traceback already cut to their bound, type and module names to their first
/// [`NAME_CEILING`] / 2 bytes if longer than [`NAME_CEILING`]; still to be
/// mapped and escaped, see `outcome::raised`).
#[derive(Debug, Clone, PartialEq)]
pub struct RaisedError {
    /// The exception class name.
    pub exc_type: String,
    /// Its module, if the guest named one.
    pub exc_module: Option<String>,
    /// `str(exc)`.
    pub message: String,
    /// `exc.args`, each a JSON value as text (0.2.0 guests; `None`: `(message,)`).
    /// An argument longer than the bound is replaced by a JSON string saying so.
    pub args: Option<Vec<String>>,
    /// The guest's own traceback text.
    pub traceback: Option<String>,
}

/// A retry asked for by a guest (`raised.retry`), copied out within the bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryAsked {
    /// Seconds from now.
    pub countdown: Option<f64>,
    /// When, ISO-8601 (cut names are refused later as unparsable).
    pub eta: Option<String>,
    /// The exception that caused it.
    pub exc: Option<RaisedError>,
    /// The guest's `max_retries` for this decision.
    pub max_retries: Option<u32>,
}

/// What a component declares about one of its tasks (0.2.0 `task-options`;
/// all defaults for a 0.1.0 component). Still to be checked (see
/// `declared::TaskOptions::check`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeclaredOptions {
    /// `rate_limit`, unparsed.
    pub rate_limit: Option<String>,
    /// `time_limit`, seconds.
    pub time_limit: Option<f64>,
    /// `soft_time_limit`, seconds.
    pub soft_time_limit: Option<f64>,
    /// `max_retries`.
    pub max_retries: Option<u32>,
    /// `default_retry_delay`, seconds.
    pub default_retry_delay: Option<f64>,
    /// `autoretry_for`, exception class names.
    pub autoretry_for: Vec<String>,
    /// `retry_backoff` factor.
    pub retry_backoff: Option<u32>,
    /// `retry_backoff_max`, seconds.
    pub retry_backoff_max: Option<u32>,
    /// `retry_jitter`.
    pub retry_jitter: Option<bool>,
    /// `acks_late`.
    pub acks_late: Option<bool>,
    /// `ignore_result`.
    pub ignore_result: Option<bool>,
    /// `queue`.
    pub queue: Option<String>,
}

/// What `invoke` returned, copied out within the bounds.
pub enum Returned {
    /// A success result's JSON text.
    Json(String),
    /// A success result longer than the bound; only its length was read.
    TooLarge(usize),
    /// The guest's error.
    Raised(RaisedError),
    /// The guest asked for a retry (0.2.0 guests).
    Retry(RetryAsked),
    /// The guest returned an exception with more than [`ARGS_CEILING`] arguments.
    TooManyArgs(usize),
}

impl RawTaskErrorV2 {
    /// Copied out within `max_error` bytes per field (and for all arguments together).
    fn bounded(self, max_error: usize) -> Result<RaisedError, usize> {
        let args = match self.args {
            None => None,
            Some(GuestList::TooMany(n)) => return Err(n),
            Some(GuestList::Items(items)) => {
                let mut left = max_error;
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        GuestText::Whole(a) if a.len() <= left => {
                            left -= a.len();
                            out.push(a);
                        }
                        big => out.push(
                            serde_json::Value::String(format!(
                                "<argument of {} bytes, over max_error_size>",
                                big.guest_len()
                            ))
                            .to_string(),
                        ),
                    }
                }
                Some(out)
            }
        };
        Ok(RaisedError {
            exc_type: self.exc_type.into_head(),
            exc_module: self.exc_module.map(GuestText::into_head),
            message: self.message.into_bounded(max_error),
            args,
            traceback: self.traceback.map(|t| t.into_bounded(max_error)),
        })
    }
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
    let ok = |text: GuestText<RESULT_CEILING, false>| match text {
        GuestText::Whole(json) if json.len() <= max_result => Returned::Json(json),
        too_large => Returned::TooLarge(too_large.guest_len()),
    };
    let call = (name, args, kwargs);
    match exports.contract {
        Contract::V0_1 => {
            type Ret = Result<GuestText<RESULT_CEILING, false>, RawTaskError>;
            let func = instance.get_typed_func::<(&str, &str, &str), (Ret,)>(&mut store, exports.invoke)?;
            let (ret,) = func.call_async(&mut store, call).await?;
            Ok(match ret {
                Ok(text) => ok(text),
                Err(e) => Returned::Raised(RaisedError {
                    // Cut names keep their head: a longer name becomes a stand-in anyway.
                    exc_type: e.exc_type.into_head(),
                    exc_module: e.exc_module.map(GuestText::into_head),
                    message: e.message.into_bounded(max_error),
                    args: None,
                    traceback: e.traceback.map(|t| t.into_bounded(max_error)),
                }),
            })
        }
        Contract::V0_2 => {
            type Ret = Result<GuestText<RESULT_CEILING, false>, RawRaised>;
            let func = instance.get_typed_func::<(&str, &str, &str), (Ret,)>(&mut store, exports.invoke)?;
            let (ret,) = func.call_async(&mut store, call).await?;
            Ok(match ret {
                Ok(text) => ok(text),
                Err(RawRaised::Exception(e)) => match e.bounded(max_error) {
                    Ok(e) => Returned::Raised(e),
                    Err(n) => Returned::TooManyArgs(n),
                },
                Err(RawRaised::Retry(r)) => {
                    let exc = match r.exc.map(|e| e.bounded(max_error)).transpose() {
                        Ok(exc) => exc,
                        Err(n) => return Ok(Returned::TooManyArgs(n)),
                    };
                    Returned::Retry(RetryAsked {
                        countdown: r.countdown,
                        eta: r.eta.map(GuestText::into_head),
                        exc,
                        max_retries: r.max_retries,
                    })
                }
            })
        }
    }
}

/// Call `tasks()` on `instance` and copy out the names and declared options,
/// refusing a list longer than `max_tasks`, a name longer than
/// [`bounds::MAX_TASK_NAME_LEN`] or options past their ceilings.
pub async fn tasks<T: Send + 'static>(
    mut store: impl AsContextMut<Data = T>,
    instance: &Instance,
    exports: &Exports,
    max_tasks: usize,
) -> wasmtime::Result<Result<Vec<(String, DeclaredOptions)>, String>> {
    let listed: Vec<(GuestText<TASK_NAME_CEILING, false>, DeclaredOptions)> = match exports.contract {
        Contract::V0_1 => {
            let func = instance.get_typed_func::<(), (GuestNames<TASKS_CEILING>,)>(&mut store, exports.tasks)?;
            let (list,) = func.call_async(&mut store, ()).await?;
            match list {
                GuestNames::Names(names) if names.len() <= max_tasks => {
                    names.into_iter().map(|n| (n, DeclaredOptions::default())).collect()
                }
                GuestNames::Names(names) => return Ok(Err(too_many(names.len(), max_tasks))),
                GuestNames::TooMany(n) => return Ok(Err(too_many(n, max_tasks))),
            }
        }
        Contract::V0_2 => {
            type Infos = GuestList<RawTaskInfo, TASKS_CEILING>;
            let func = instance.get_typed_func::<(), (Infos,)>(&mut store, exports.tasks)?;
            let (list,) = func.call_async(&mut store, ()).await?;
            let infos = match list {
                GuestList::Items(infos) if infos.len() <= max_tasks => infos,
                GuestList::Items(infos) => return Ok(Err(too_many(infos.len(), max_tasks))),
                GuestList::TooMany(n) => return Ok(Err(too_many(n, max_tasks))),
            };
            let mut out = Vec::with_capacity(infos.len());
            for info in infos {
                match info.options.bounded() {
                    Ok(options) => out.push((info.name, options)),
                    Err(e) => return Ok(Err(e)),
                }
            }
            out
        }
    };
    let mut out = Vec::with_capacity(listed.len());
    for (name, options) in listed {
        match name {
            GuestText::Whole(n) if n.len() <= bounds::MAX_TASK_NAME_LEN => out.push((n, options)),
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

impl RawTaskOptions {
    /// The options, or why they are refused (a name past its ceiling).
    fn bounded(self) -> Result<DeclaredOptions, String> {
        fn name(field: &str, n: Option<Name>) -> Result<Option<String>, String> {
            match n {
                None => Ok(None),
                Some(GuestText::Whole(s)) => Ok(Some(s)),
                Some(long) => {
                    Err(format!("declares a {field} of {} bytes; the limit is {NAME_CEILING}", long.guest_len()))
                }
            }
        }
        let autoretry_for = match self.autoretry_for {
            GuestList::TooMany(n) => {
                return Err(format!("declares {n} exception names in autoretry-for; the limit is {AUTORETRY_CEILING}"));
            }
            GuestList::Items(names) => names
                .into_iter()
                .map(|n| name("autoretry-for name", Some(n)).map(Option::unwrap_or_default))
                .collect::<Result<Vec<String>, String>>()?,
        };
        Ok(DeclaredOptions {
            rate_limit: name("rate-limit", self.rate_limit)?,
            time_limit: self.time_limit,
            soft_time_limit: self.soft_time_limit,
            max_retries: self.max_retries,
            default_retry_delay: self.default_retry_delay,
            autoretry_for,
            retry_backoff: self.retry_backoff,
            retry_backoff_max: self.retry_backoff_max,
            retry_jitter: self.retry_jitter,
            acks_late: self.acks_late,
            ignore_result: self.ignore_result,
            queue: name("queue", self.queue)?,
        })
    }
}

fn too_many(n: usize, max: usize) -> String {
    format!("declares {n} tasks; a component may declare at most {max} (max_tasks_per_component)")
}
