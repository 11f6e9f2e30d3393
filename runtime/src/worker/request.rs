//! Handling one received message: decode, check, wait for its ETA and a run
//! slot, run it in the sandbox, store the outcome, acknowledge.
//!
//! Every path ends with the message settled — acknowledged, rejected without
//! requeue (an unknown or invalid task, as Celery), or put back on warm
//! shutdown — and, when the task id is known and results are on, a stored
//! state the client can read: bad input becomes a `FAILURE`, never a crash.
//! The one exception is a stale delivery ([`Acker::is_stale`]: the broker took
//! it back when the connection it came on closed, and delivers it again):
//! it is dropped, unsettled, rather than run, at the last moments before it
//! would start (received, its ETA come, a run slot free), so that the task
//! runs once, from the redelivered copy.

use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::Instrument;

use super::state::Tracked;
use super::{Phase, Shared, builtins, canvas, retries, retry};
use crate::backend::{ChordCounter, ChordMember, Reply, Routing};
use crate::broker::{Acker, BadMessage, Delivery};
use crate::config::{Annotation, RateLimit};
use crate::protocol::result::{ResultMeta, child_tuple};
use crate::protocol::{EncodedTask, ExceptionInfo, NewTask, ProtocolError, TaskMessage, saferepr};
use crate::sandbox::host::disposition::Disposition;
use crate::sandbox::{CallReport, CallResult, Invocation, Outcome, Request, StateUpdate};

/// Handle one delivery to the end.
pub(crate) async fn handle(s: &Shared, d: Delivery, prefetch: OwnedSemaphorePermit) {
    let Delivery { message, mut acker, .. } = d;
    let raw = match message {
        Ok(raw) => raw,
        Err(BadMessage::Unreadable { error, preview }) => {
            tracing::error!("Received invalid message: {error}; the message has been ignored and discarded: {preview}");
            acker.ack();
            return;
        }
        Err(BadMessage::Undecodable(e)) => {
            // Held while its FAILURE is written (which may wait out a backend outage).
            acker.hold();
            return Box::pin(reject(s, &mut acker, e, Routing::default())).await;
        }
    };
    let routing = Routing::of(&raw.delivery);
    let msg = match TaskMessage::decode(raw, &s.accept) {
        Ok(m) => m,
        Err(e) => {
            acker.hold();
            return Box::pin(reject(s, &mut acker, e, routing)).await;
        }
    };
    let mut prefetch = Some(prefetch);
    let builtin = builtins::Builtin::named(&msg.task);
    if builtin.is_none() && s.sandbox.task(&msg.task).is_none() && s.sandbox.is_loading(&msg.task) {
        // Its component is still compiling: wait for it (bounded by the
        // compile budget), held like an ETA task and out of the prefetch
        // window, and give it back if the worker stops first.
        acker.hold();
        prefetch = None;
        tokio::select! {
            biased;
            _ = stopped(s.phase.clone()) => return Box::pin(acker.requeue()).await,
            _ = s.sandbox.serves(&msg.task) => {}
        }
    }
    if builtin.is_none() && s.sandbox.task(&msg.task).is_none() {
        tracing::error!(
            "Received unregistered task of type '{}'.\nThe message has been ignored and discarded.\n\n{}\n\
             The delivery info for this task is: {{'exchange': '{}', 'routing_key': '{}'}}",
            msg.task,
            s.sandbox.not_registered_hint(&msg.task),
            msg.delivery.exchange,
            msg.delivery.routing_key
        );
        // Celery's on_unknown_task sends task-failed (there is no request yet, so no task-received).
        let mut fields = serde_json::Map::new();
        fields.insert("uuid".into(), Value::from(msg.id.as_str()));
        fields.insert("exception".into(), Value::from(ExceptionInfo::not_registered(&msg.task).repr()));
        s.state.task_event("task-failed", fields);
        acker.hold();
        Box::pin(store_exception(s, &msg, &routing, &ExceptionInfo::not_registered(&msg.task), None)).await;
        // Celery's on_unknown_task: reject without requeue (dead-lettered where the queue says so).
        acker.reject().await;
        return;
    }
    run(s, &mut acker, msg, routing, prefetch).await;
}

/// A message that could not be decoded: log it, fail the task if its id is
/// known, and drop the message.
async fn reject(s: &Shared, acker: &mut Acker, e: ProtocolError, routing: Routing) {
    let exc = match &e {
        ProtocolError::ContentDisallowed { content_type, .. } => ExceptionInfo::new(
            "ContentDisallowed",
            vec![Value::String(format!("Refusing to deserialize untrusted content of type {content_type}"))],
            "kombu.exceptions",
        ),
        other => ExceptionInfo::new("InvalidTaskError", vec![Value::String(other.to_string())], "celery.exceptions"),
    };
    tracing::error!("Received invalid task message: {e}\nThe message has been ignored and discarded.");
    // Only signed messages may write anything when signing is required: the
    // headers naming the task id are not signed, and a forged message must not
    // overwrite the result of a real task (Celery stores nothing either).
    let unsigned = matches!(e, ProtocolError::Signature { .. }) || s.accept.wants_auth();
    if let Some(id) = e.task_id().filter(|_| !unsigned) {
        store(s, &routing, ResultMeta::failure(id, &exc, None).with_date_done(Some(Utc::now()))).await;
    }
    match e {
        // Celery's on_decode_error: a body it cannot decode is acknowledged.
        ProtocolError::ContentDisallowed { .. }
        | ProtocolError::Signature { .. }
        | ProtocolError::BodyDecode { .. }
        | ProtocolError::UnsupportedBodyEncoding { .. }
        | ProtocolError::BadBase64 { .. }
        | ProtocolError::EnvelopeJson(_)
        | ProtocolError::EnvelopeNotObject { .. } => acker.ack(),
        // Its on_invalid_task: rejected without requeue.
        _ => acker.reject().await,
    }
}

/// Hand a task whose ETA is `wait` away to the transport's delayed
/// delivery, if it has one and the ETA is beyond its horizon; true once the
/// broker has the copy (the caller then acknowledges the original). On
/// failure the worker holds the message itself.
async fn park(s: &Shared, msg: &TaskMessage, wait: std::time::Duration) -> bool {
    let Some(delayed) = s.broker.delayed_delivery() else { return false };
    if wait <= delayed.horizon() {
        return false;
    }
    let encoded = match encode(s, &msg.to_new_task()) {
        // Back to the queue it was consumed from when it is due (its routing
        // key names a queue only on the default exchange).
        Ok(e) => {
            let queue = msg.delivery.queue.clone().unwrap_or_else(|| msg.delivery.routing_key.clone());
            EncodedTask { routing_key: queue, ..e }
        }
        Err(e) => {
            tracing::warn!("cannot re-encode ETA task {}: {e}; holding it", msg.id);
            return false;
        }
    };
    retry("park an ETA task", || delayed.park(&encoded, wait)).await.is_some()
}

/// Whether the delivery of task `name[id]` has gone stale (see the module
/// docs): it must not run here; logged with `when` it was noticed.
fn stale(acker: &Acker, name: &str, id: &str, when: &str) -> bool {
    let stale = acker.is_stale();
    if stale {
        tracing::info!(
            "Task {name}[{id}] dropped {when}: the connection it came on has closed, so the broker took the \
             message back and delivers it again"
        );
    }
    stale
}

/// Wait until `phase` leaves `Running`.
async fn stopped(mut phase: watch::Receiver<Phase>) {
    while *phase.borrow_and_update() == Phase::Running {
        if phase.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Wait until `phase` is `Cold`.
async fn cold_shutdown(mut phase: watch::Receiver<Phase>) {
    while *phase.borrow_and_update() != Phase::Cold {
        if phase.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A running task stopped by a cold shutdown: its message goes back to its
/// queue so that it runs again, and the log says so. With late acks the
/// message is still unacknowledged: it is requeued. With early acks it was
/// acknowledged as the task started, so Celery loses it; here a copy is
/// published back to the queue it came from (same id), and only if that
/// fails is it lost — which the log then says.
async fn cancelled_by_cold_shutdown(s: &Shared, acker: &mut Acker, msg: &TaskMessage, acks_late: bool) {
    let (name, id) = (msg.display_name(), &msg.id);
    if acks_late {
        acker.requeue().await;
        tracing::warn!(
            "Task {name}[{id}] terminated by cold shutdown; its message was put back on the queue \
             (task_acks_late) and runs again"
        );
        return;
    }
    let queue = msg.delivery.queue.clone().unwrap_or_else(|| msg.delivery.routing_key.clone());
    let copy =
        encode(s, &msg.to_new_task()).map(|e| EncodedTask { routing_key: queue.clone(), exchange: String::new(), ..e });
    let sent = match &copy {
        Ok(encoded) => tokio::time::timeout(COLD_REPUBLISH_TIMEOUT, s.broker.publish(&queue, encoded)).await,
        Err(e) => {
            tracing::debug!("cannot re-encode {name}[{id}]: {e}");
            Ok(Ok(()))
        }
    };
    match (copy.is_ok(), sent) {
        (true, Ok(Ok(()))) => tracing::warn!(
            "Task {name}[{id}] terminated by cold shutdown; its message had been acknowledged as it started \
             (early ack), so a copy was sent back to queue '{queue}' and it runs again"
        ),
        _ => tracing::error!(
            "Task {name}[{id}] terminated by cold shutdown and lost: its message was acknowledged as it started \
             (early ack, as in Celery) and could not be sent back; set task_acks_late = true to have running tasks \
             put back on their queue"
        ),
    }
}

/// How long a cold shutdown tries to send a running early-ack task back to its queue.
const COLD_REPUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Run a decoded task message.
async fn run(
    s: &Shared,
    acker: &mut Acker,
    msg: TaskMessage,
    routing: Routing,
    mut prefetch: Option<OwnedSemaphorePermit>,
) {
    // Held while the message counts against the prefetch window; then traded
    // for a backlog slot, which bounds results not yet written.
    let name = msg.display_name().to_string();
    tracing::info!("Task {name}[{}] received", msg.id);
    // Seen by `inspect reserved/scheduled/active` until this handler ends; sends task-received.
    let entry = s.sandbox.task(&msg.task);
    let tenant = entry.as_deref().and_then(crate::sandbox::TaskEntry::tenant).map(str::to_string);
    let tracked = s.state.track(&msg, tenant.as_deref());
    // What the component declares for the task, under the configured annotations.
    let mut declared = entry.map(|t| t.options.clone()).unwrap_or_default();
    let annotation = retries::annotation_over(s.settings.annotation_in(&msg.task, tenant.as_deref()), &declared);
    // Configured annotations override what the component declares, as in Celery.
    declared.max_retries = annotation.max_retries.or(declared.max_retries);
    declared.default_retry_delay = annotation.default_retry_delay.or(declared.default_retry_delay);
    if tracked.is_revoked() {
        return Box::pin(revoked(s, acker, &msg, &routing, &annotation, &tracked, Revocation::Revoked)).await;
    }
    let acks_late = annotation.acks_late.unwrap_or(s.settings.task_acks_late);
    // Parking a stale delivery would leave two copies: the parked one and the redelivered one.
    if stale(acker, &name, &msg.id, "before starting") {
        return;
    }

    // A far-future ETA is kept by the transport when it can (AMQP's delay
    // queues): the original is acknowledged once the copy is safe.
    if let Some(eta) = msg.eta
        && let Ok(wait) = (eta - Utc::now()).to_std()
        && Box::pin(park(s, &msg, wait)).await
    {
        tracing::debug!("Task {name}[{}] parked until its ETA {eta}", msg.id);
        acker.ack();
        return;
    }
    // Wait for the ETA, giving the message back if the worker stops first.
    if let Some(eta) = msg.eta
        && let Ok(wait) = (eta - Utc::now()).to_std()
    {
        // Celery does not count ETA tasks against the prefetch limit.
        prefetch = None;
        acker.hold();
        tracked.scheduled(crate::protocol::time::isoformat(&eta), msg.delivery.priority.unwrap_or(0));
        tokio::select! {
            // Biased: once the worker is stopping, never start (give back instead).
            biased;
            _ = stopped(s.phase.clone()) => return Box::pin(acker.requeue()).await,
            _ = tracked.revoked() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        tracked.reserved();
        if stale(acker, &name, &msg.id, "when its ETA came") {
            return;
        }
    }
    // Counted among its tenant's waiting messages until it has the tenant's run slot (too many pause
    // the tenant's own queue: worker/rate.rs).
    let tenant_wait = tenant.as_deref().and_then(|t| s.rate_limits.waiting(t));
    // Wait for a rate-limit token (worker/rate.rs), held out of the prefetch window like an ETA task.
    if !Box::pin(rate_limit(s, &msg, tenant.as_deref(), &annotation, acker, &mut prefetch)).await {
        return Box::pin(acker.requeue()).await;
    }
    if msg.is_expired(Utc::now()) {
        return Box::pin(revoked(s, acker, &msg, &routing, &annotation, &tracked, Revocation::Expired)).await;
    }
    if s.stopping() {
        return Box::pin(acker.requeue()).await;
    }
    // A run slot of the tenant's own first (`concurrency` in its tenant.toml):
    // while it waits, the message leaves the prefetch window like a
    // rate-limited one, so other tenants' messages keep flowing past it.
    let tenant_slot = match tenant.as_deref().and_then(|t| s.rate_limits.tenant_slots(t)) {
        None => None,
        Some(slots) => match Box::pin(slot_of(s, &slots, acker, &tracked, Some(&mut prefetch))).await {
            Ok(p) => Some(p),
            Err(why) => return Box::pin(gave_up(s, acker, &msg, &routing, &annotation, &tracked, why)).await,
        },
    };
    drop(tenant_wait);
    let slot = match Box::pin(slot_of(s, &s.run_slots, acker, &tracked, None)).await {
        Ok(p) => p,
        Err(why) => return Box::pin(gave_up(s, acker, &msg, &routing, &annotation, &tracked, why)).await,
    };
    // Last look before it runs (it may have waited long for the slot); the slot goes to the next one.
    if stale(acker, &name, &msg.id, "as a run slot freed up") {
        return;
    }
    // Checked again as the task starts, as Celery does: one that waited for a
    // slot past its `expires` is revoked, not run.
    if msg.is_expired(Utc::now()) {
        drop(slot);
        return Box::pin(revoked(s, acker, &msg, &routing, &annotation, &tracked, Revocation::Expired)).await;
    }
    if tracked.is_revoked() {
        drop(slot);
        return Box::pin(revoked(s, acker, &msg, &routing, &annotation, &tracked, Revocation::Revoked)).await;
    }
    tracked.started(!acks_late);
    let _backlog;
    if !acks_late {
        // Written before the call starts: a worker killed mid-call must not run it again.
        acker.ack_before_start().await;
        _backlog = s.backlog.clone().acquire_owned().await.ok();
        prefetch = None;
    } else {
        acker.hold();
    }

    let ignore_result = ignores_result(s, &msg, &annotation);
    let results = if ignore_result { None } else { s.results.as_ref() };
    if results.is_some() && annotation.track_started.unwrap_or(s.settings.task_track_started) {
        let meta = ResultMeta::started(&msg.id, std::process::id(), &s.hostname);
        store(s, &routing, base_meta(&msg, meta)).await;
    }

    // Custom states from the guest, written as they come (latest wins).
    let (sink, mut updates) = watch::channel::<Option<StateUpdate>>(None);
    let writer = results.map(|b| {
        let id = msg.id.clone();
        let meta_base = (msg.group.clone(), msg.parent_id.clone());
        // Named in the custom states the call stores, looked up as it starts (after any wait, so a
        // hot swap meanwhile is seen); the final state names the version that ran.
        let version = s.sandbox.task(&msg.task).map(|t| t.component.version.clone());
        let routing = routing.clone();
        let b = b.clone();
        tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                let Some(u) = updates.borrow_and_update().clone() else { continue };
                let meta = ResultMeta::custom(&id, &u.state, u.meta)
                    .with_group_id(meta_base.0.clone())
                    .with_parent_id(meta_base.1.clone())
                    .with_component_version(version.as_deref());
                b.write(Reply { meta, routing: routing.clone() }).await;
            }
        })
    });

    let invocation = Invocation {
        args: match &msg.wide_args {
            Some((args, _)) => args.clone(),
            None => serde_json::to_string(&msg.args).unwrap_or_else(|_| "[]".into()),
        },
        kwargs: match &msg.wide_args {
            Some((_, kwargs)) => kwargs.clone(),
            None => serde_json::to_string(&msg.kwargs).unwrap_or_else(|_| "{}".into()),
        },
        request: request_context(s, &msg),
        // A time limit set by `control time_limit` tightens the task's own.
        message_time_limit: match (msg.timelimit.hard, s.state.hard_time_limit(&msg.task)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        state_sink: Some(sink),
        may_send: annotation.send_tasks.unwrap_or(false),
        send_namespace: tenant.clone(),
        http_allow: annotation.http_allow.clone().unwrap_or_default(),
        config: s.settings.tenants.config_of(tenant.as_deref()),
        // Celery's order: the message's own, the task's (remote control, then annotations and what
        // the component declares), then the worker's `task_soft_time_limit`.
        soft_time_limit: msg
            .timelimit
            .soft
            .or_else(|| s.state.soft_time_limit(&msg.task))
            .or(annotation.soft_time_limit)
            .or(s.settings.task_soft_time_limit),
    };
    // Only the guest's own lines (host.log, stdout/stderr) carry the task tag,
    // as with Celery's task logger; the worker's lines are plain.
    let span = crate::logging::task_span(msg.display_name(), &msg.id);
    let call_started = std::time::Instant::now();
    let call = async {
        match builtins::Builtin::named(&msg.task) {
            Some(b) => Box::pin(builtins::call(s, b, &msg, invocation)).await,
            None => s.sandbox.call(&msg.task, invocation).await,
        }
    }
    .instrument(span);
    let result = tokio::select! {
        biased;
        // `control revoke --terminate` stops the call (the sandbox is dropped mid-run): `None`.
        r = Box::pin(terminable(call, &tracked)) => r,
        // A cold shutdown stops the call where it is (the guest is dropped).
        _ = cold_shutdown(s.phase.clone()) => {
            drop(slot);
            return Box::pin(cancelled_by_cold_shutdown(s, acker, &msg, acks_late)).await;
        }
    };
    // The slot is for running: storing the outcome must not hold up the next task.
    drop(slot);
    drop(tenant_slot);
    let Some(result) = result else {
        if let Some(w) = writer {
            w.abort();
        }
        return Box::pin(revoked(s, acker, &msg, &routing, &annotation, &tracked, Revocation::Terminated)).await;
    };
    if let Some(w) = writer {
        // The sink was moved into the call and is dropped now: the writer
        // stores the last update and ends, before the final state is written.
        let _ = w.await;
    }
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            // Only possible if the task vanished between the check and the call.
            tracing::error!("{e}");
            Box::pin(store_exception(s, &msg, &routing, &ExceptionInfo::not_registered(&msg.task), None)).await;
            acker.ack();
            return;
        }
    };
    // Per-call accounting, for an operator to bill and cap tenants (also in
    // the task events and the metrics). `instance_call`: the call's number in
    // its instance (1: a fresh one; more with `max_calls_per_instance`).
    tracing::info!(
        "Task {name}[{}] used fuel={} sandbox={:.6}s wall={:.6}s memory={} tenant={} version={} instance_call={}",
        msg.id,
        result.report.fuel_consumed,
        result.report.wall.as_secs_f64(),
        call_started.elapsed().as_secs_f64(),
        result.report.peak_memory,
        tenant.as_deref().unwrap_or("-"),
        if result.version.is_empty() { "-" } else { &result.version },
        result.report.reused + 1,
    );
    // What a chord counts for this member (only computed for chord members).
    let in_chord = msg.embed.chord.is_some() && msg.group.is_some();
    let chord_entry: Option<(&str, Value)>;
    // The result's host memory stays reserved until the outcome is stored (it is dropped at the end).
    let CallResult {
        outcome,
        report,
        version,
        host_memory: _held,
        sent,
        replacement,
        chord_additions,
        disposition,
        ..
    } = result;
    // What the task sent (`canvas.send`: Celery's `other.delay()` inside a task), whatever the
    // outcome: a Python task's sends are out before it fails. Its children, in the stored result.
    let sent: Vec<_> = sent.iter().map(|sig| canvas::apply(sig, None, &msg, &s.router())).collect();
    let sent_children = publish_all(s, sent).await;
    // `canvas.add-to-chord`: counted in the chord before this member's own result is.
    for sig in chord_additions {
        Box::pin(add_to_chord(s, &msg, sig)).await;
    }
    // `autoretry_for`: a listed exception is a retry request.
    let outcome = match outcome {
        Outcome::Failure(f) => match retries::autoretry(&f, &declared, msg.retries, retries::random_unit()) {
            Some(r) => Outcome::Retry(r),
            None => Outcome::Failure(f),
        },
        other => other,
    };
    // A retry request: re-published and stored as RETRY, or a FAILURE once retries are exhausted.
    let outcome = match outcome {
        Outcome::Retry(r) => match retries::decide(&msg, &r, &declared, Utc::now()) {
            retries::Decision::Retry { task, when, exc, traceback, cause } => {
                let text = retries::retry_text(&when, cause.as_ref());
                tracing::info!("Task {name}[{}] retry: {text}", msg.id);
                if tracked.events_on() {
                    let mut f = serde_json::Map::new();
                    f.insert("exception".into(), Value::from(retries::retry_event_repr(&when, cause.as_ref())));
                    f.insert("traceback".into(), Value::from(traceback.as_str()));
                    tracked.event("task-retried", f);
                }
                tracked.finished(&msg.task, "RETRY", Some(&report));
                let children = joined(sent_children, publish_all(s, vec![Ok(canvas::Applied::from(*task))]).await);
                if results.is_some() {
                    let meta = ResultMeta::retry(&msg.id, &exc, Some(traceback))
                        .with_children(children)
                        .with_component_version(Some(&version));
                    store(s, &routing, base_meta(&msg, meta)).await;
                }
                if acks_late {
                    acker.ack();
                }
                drop(prefetch);
                return;
            }
            retries::Decision::Fail { exc, traceback } => Outcome::Failure(crate::sandbox::TaskFailure {
                kind: crate::sandbox::FailureKind::Raised,
                exc_type: exc.exc_type.clone(),
                exc_module: exc.exc_module.clone().unwrap_or_else(|| "builtins".into()),
                message: exc.message(),
                args: Some(exc.exc_message.clone()),
                traceback,
            }),
        },
        other => other,
    };
    match outcome {
        // `host.ignore` / `host.reject` (Celery's `raise Ignore()` / `raise Reject(requeue=...)`):
        // nothing stored, no callbacks; a rejected late-ack message is given back or dropped.
        Outcome::Success(_) if disposition.is_some() => {
            chord_entry = None;
            match disposition {
                Some(Disposition::Reject { requeue }) => {
                    tracing::info!(
                        "Task {name}[{}] Reject(requeue={})",
                        msg.id,
                        if requeue { "True" } else { "False" }
                    );
                    tracked.finished(&msg.task, "REJECTED", Some(&report));
                    if requeue {
                        acker.requeue().await;
                    } else {
                        acker.reject().await;
                    }
                }
                _ => {
                    tracing::info!("Task {name}[{}] ignored", msg.id);
                    tracked.finished(&msg.task, "IGNORED", Some(&report));
                }
            }
        }
        // `canvas.replace` (Celery's `self.replace(sig)`): the replacement, sent with this task's id,
        // callbacks, chain and chord, is what finishes it; this call's value is dropped, as Celery's
        // `Ignore` drops it.
        Outcome::Success(_) if replacement.is_some() => {
            chord_entry = None;
            let sig = replacement.unwrap_or_default();
            tracing::info!("Task {name}[{}] ignored: replaced by {}", msg.id, canvas::describe(&sig));
            tracked.finished(&msg.task, "IGNORED", Some(&report));
            publish_all(s, vec![canvas::replace(&msg, &sig, &s.router())]).await;
        }
        Outcome::Success(value) => {
            chord_entry = in_chord.then(|| ("SUCCESS", value.clone()));
            announce_success(&tracked, &name, &msg.id, &value, (&report, &version));
            tracked.finished(&msg.task, "SUCCESS", Some(&report));
            // Continuations first, then the result naming them as children, as Celery does.
            let children = joined(sent_children, publish_all(s, canvas::on_success(&msg, &value, &s.router())).await);
            if results.is_some() {
                let meta = ResultMeta::success(&msg.id, value).with_children(children);
                store(s, &routing, base_meta(&msg, meta.with_component_version(Some(&version)))).await;
            }
        }
        // Handled above; kept for exhaustiveness.
        Outcome::Retry(_) => chord_entry = None,
        Outcome::Failure(f) => {
            // Already one a client may safely rebuild (sandbox::outcome::raised).
            let exc = f.exception();
            chord_entry = in_chord.then(|| ("FAILURE", exc.to_value()));
            announce_failure(&tracked, &name, &msg.id, &exc, &f.traceback, (&report, &version));
            tracked.finished(&msg.task, "FAILURE", Some(&report));
            publish_all(s, canvas::on_failure(&msg, &s.router())).await;
            if results.is_some() {
                let meta = ResultMeta::failure(&msg.id, &exc, Some(f.traceback))
                    .with_children(sent_children)
                    .with_component_version(Some(&version));
                store(s, &routing, base_meta(&msg, meta)).await;
            }
        }
    }
    if let (Some(b), Some(group), Some((state, value)), true) =
        (&s.backend, msg.group.as_deref(), &chord_entry, results.is_some())
    {
        match b.chords() {
            Some(chords) => Box::pin(chord_part_return(s, chords, group, &msg, state, value)).await,
            // The database backend: the chord's `celery.chord_unlock` task polls its members.
            None => tracing::debug!("chord {group}: member {} done; celery.chord_unlock completes the chord", msg.id),
        }
    }
    if acks_late {
        acker.ack();
    }
    drop(prefetch);
}

/// Why a task ends `REVOKED` without running (to its end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revocation {
    /// Past its `expires`.
    Expired,
    /// `control revoke` before it started.
    Revoked,
    /// `control revoke --terminate` (or `terminate`) while it ran.
    Terminated,
}

/// A task that ends `REVOKED`: logged, `task-revoked` sent (`terminated`,
/// `signum` 15 when terminated, `expired`), `REVOKED` stored with the reason
/// (unless results are off for it), the message acknowledged — as Celery's
/// `Request._announce_revoked`.
async fn revoked(
    s: &Shared,
    acker: &mut Acker,
    msg: &TaskMessage,
    routing: &Routing,
    annotation: &Annotation,
    tracked: &Tracked,
    why: Revocation,
) {
    let (name, id) = (msg.display_name(), &msg.id);
    let reason = match why {
        Revocation::Expired => {
            tracing::info!("Task {name}[{id}] expired at {:?}; discarding it (REVOKED)", msg.expires);
            "expired"
        }
        Revocation::Revoked => {
            tracing::info!("Discarding revoked task: {name}[{id}].");
            "revoked"
        }
        Revocation::Terminated => {
            tracing::error!("Task handler raised error: Terminated(15)\nTask {name}[{id}] terminated");
            "terminated"
        }
    };
    let terminated = why == Revocation::Terminated;
    let mut f = serde_json::Map::new();
    f.insert("terminated".into(), Value::from(terminated));
    f.insert("signum".into(), if terminated { Value::from(15) } else { Value::Null });
    f.insert("expired".into(), Value::from(why == Revocation::Expired));
    tracked.event("task-revoked", f);
    tracked.finished(&msg.task, "REVOKED", None);
    if !ignores_result(s, msg, annotation) {
        acker.hold();
        store(s, routing, base_meta(msg, ResultMeta::revoked(&msg.id, reason))).await;
    }
    acker.ack();
}

/// Run `call` unless `control revoke --terminate` stops it first (`None`).
async fn terminable<F: std::future::Future>(call: F, tracked: &Tracked) -> Option<F::Output> {
    let mut call = std::pin::pin!(call);
    loop {
        tokio::select! {
            r = &mut call => return Some(r),
            // A wake-up left from before it started (a plain revoke) is not a terminate.
            _ = tracked.revoked() => if tracked.is_terminated() { return None },
        }
    }
}

/// What a call used, and the version of the component that ran it.
type Ran<'a> = (&'a CallReport, &'a str);

/// The sandbox figures Celeriac adds to `task-succeeded`/`task-failed`:
/// fuel, peak guest memory, time in the sandbox, the component's version
/// (and the tenant, added by the callers).
fn sandbox_fields((report, version): Ran, f: &mut serde_json::Map<String, Value>) {
    f.insert("fuel_consumed".into(), Value::from(report.fuel_consumed));
    f.insert("peak_memory".into(), Value::from(report.peak_memory));
    f.insert("sandbox_time".into(), Value::from(report.wall.as_secs_f64()));
    f.insert("component_version".into(), Value::from(version));
}

/// A success: its log line and its `task-succeeded` event, from one place.
fn announce_success(tracked: &Tracked, name: &str, id: &str, value: &Value, ran: Ran) {
    let secs = ran.0.wall.as_secs_f64();
    let repr = saferepr(value, Some(1024), 8);
    tracing::info!("Task {name}[{id}] succeeded in {secs:.6}s: {repr}");
    if !tracked.events_on() {
        return;
    }
    let mut f = serde_json::Map::new();
    f.insert("result".into(), Value::from(repr));
    f.insert("runtime".into(), Value::from(secs));
    sandbox_fields(ran, &mut f);
    if !tracked.tenant().is_empty() {
        f.insert("tenant".into(), Value::from(tracked.tenant()));
    }
    tracked.event("task-succeeded", f);
}

/// A failure: its log line and its `task-failed` event, from one place.
fn announce_failure(tracked: &Tracked, name: &str, id: &str, exc: &ExceptionInfo, traceback: &str, ran: Ran) {
    tracing::error!("Task {name}[{id}] raised unexpected: {}\n{}", exc.repr(), traceback.trim_end());
    if !tracked.events_on() {
        return;
    }
    let mut f = serde_json::Map::new();
    f.insert("exception".into(), Value::from(exc.repr()));
    f.insert("traceback".into(), Value::from(traceback));
    sandbox_fields(ran, &mut f);
    if !tracked.tenant().is_empty() {
        f.insert("tenant".into(), Value::from(tracked.tenant()));
    }
    tracked.event("task-failed", f);
}

/// Why a request stopped waiting for a run slot without one.
enum NoSlot {
    /// The worker began stopping: the message goes back.
    Stopping,
    /// The task was revoked meanwhile.
    Revoked,
}

/// A permit of `slots` at once, or after holding the message (it must be in
/// the transport's bookkeeping while it waits) until one frees up. With
/// `prefetch`, the wait also takes one of the places held out of the prefetch
/// window (`rate::MAX_HELD`) while any is left, and gives up the prefetch slot.
async fn slot_of(
    s: &Shared,
    slots: &Arc<Semaphore>,
    acker: &mut Acker,
    tracked: &Tracked,
    prefetch: Option<&mut Option<OwnedSemaphorePermit>>,
) -> Result<OwnedSemaphorePermit, NoSlot> {
    if let Ok(p) = slots.clone().try_acquire_owned() {
        return Ok(p);
    }
    acker.hold();
    let _held = prefetch.and_then(|prefetch| s.rate_limits.hold().inspect(|_| *prefetch = None));
    tokio::select! {
        // Biased: once the worker is stopping, never start (give back instead).
        biased;
        _ = stopped(s.phase.clone()) => Err(NoSlot::Stopping),
        _ = tracked.revoked() => Err(NoSlot::Revoked),
        p = slots.clone().acquire_owned() => p.map_err(|_| NoSlot::Stopping),
    }
}

/// Settle a request that stopped waiting for a run slot: given back, or revoked.
async fn gave_up(
    s: &Shared,
    acker: &mut Acker,
    msg: &TaskMessage,
    routing: &Routing,
    annotation: &Annotation,
    tracked: &Tracked,
    why: NoSlot,
) {
    match why {
        NoSlot::Stopping => acker.requeue().await,
        NoSlot::Revoked => Box::pin(revoked(s, acker, msg, routing, annotation, tracked, Revocation::Revoked)).await,
    }
}

/// Wait for the task's rate-limit token, if it has a limit and the bucket is
/// empty: the message is held (acknowledged by no one) and, while there is
/// room (`rate::MAX_HELD`), leaves the prefetch window. False when the worker
/// began stopping first: the caller gives the message back.
async fn rate_limit(
    s: &Shared,
    msg: &TaskMessage,
    tenant: Option<&str>,
    annotation: &Annotation,
    acker: &mut Acker,
    prefetch: &mut Option<OwnedSemaphorePermit>,
) -> bool {
    // A limit set by `control rate_limit` replaces the configured one.
    let limit = match s.state.rate_limit(&msg.task) {
        Some(set) => set.as_ref().and_then(RateLimit::tasks_per_second),
        None => s.settings.rate_limit(annotation),
    };
    // The task's own token first; the tenant's (and the cluster's) only once it is due, so a task
    // waiting a minute for its own token does not book its tenant's token for a minute from now
    // (a bucket is a reservation clock: that would hold up the tenant's other tasks until then).
    let local = s.rate_limits.reserve(&msg.task, limit, std::time::Instant::now());
    let mut held = None;
    if let Some(wait) = local
        && !held_for(s, msg, wait, acker, prefetch, &mut held).await
    {
        return false;
    }
    let tenant = tenant.and_then(|t| s.rate_limits.reserve_tenant(t, std::time::Instant::now()));
    let cluster = cluster_wait(s, &msg.task, annotation).await;
    match tenant.into_iter().chain(cluster).max() {
        Some(wait) => held_for(s, msg, wait, acker, prefetch, &mut held).await,
        None => true,
    }
}

/// Hold a rate-limited message for `wait` (out of the prefetch window while
/// there is room; `held` keeps that place across the waits of one message).
/// False when the worker began stopping first.
async fn held_for(
    s: &Shared,
    msg: &TaskMessage,
    wait: std::time::Duration,
    acker: &mut Acker,
    prefetch: &mut Option<OwnedSemaphorePermit>,
    held: &mut Option<OwnedSemaphorePermit>,
) -> bool {
    tracing::debug!("Task {}[{}] rate limited: starts in {wait:?}", msg.display_name(), msg.id);
    if held.is_none() {
        acker.hold();
        *held = s.rate_limits.hold().inspect(|_| *prefetch = None);
    }
    tokio::select! {
        biased;
        _ = stopped(s.phase.clone()) => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// The wait the cluster-wide limit (`cluster_rate_limit`) asks for, reserved in
/// the broker's shared bucket; none without such a limit, or when the bucket
/// cannot be reached (the per-worker limit still holds; logged).
async fn cluster_wait(s: &Shared, task: &str, annotation: &Annotation) -> Option<std::time::Duration> {
    let rate = annotation.cluster_rate_limit.as_ref().and_then(RateLimit::tasks_per_second)?;
    let shared = s.broker.shared_rate_limits()?;
    match shared.reserve(task, rate).await {
        Ok(wait) => Some(wait).filter(|w| !w.is_zero()),
        Err(e) => {
            tracing::warn!("cluster_rate_limit of {task}: cannot reserve in the broker's bucket ({e}); not applied");
            None
        }
    }
}

/// Count a finished chord header member; the worker that completes the chord
/// sends (or fails) its body.
async fn chord_part_return(
    s: &Shared,
    chords: &dyn ChordCounter,
    group_id: &str,
    msg: &TaskMessage,
    state: &str,
    result: &Value,
) {
    let member = ChordMember {
        group_id,
        task_id: &msg.id,
        index: msg.group_index.unwrap_or(0),
        state,
        result,
        chord_size: msg.embed.chord.as_ref().and_then(|c| c.get("chord_size")).and_then(Value::as_u64),
    };
    let group = group_id;
    let Some(entries) = retry("count a chord member", || chords.chord_part_return(member)).await.flatten() else {
        return;
    };
    match canvas::chord_body(msg, &entries, &s.router()) {
        Ok(canvas::ChordOutcome::Publish(body)) => {
            publish_all(s, vec![Ok(body)]).await;
        }
        Ok(canvas::ChordOutcome::Fail { body_id, message, errbacks }) => {
            publish_all(s, errbacks).await;
            tracing::error!("Chord {group} failed: {message}");
            let exc = ExceptionInfo::new("ChordError", vec![Value::String(message)], "celery.exceptions");
            let meta = ResultMeta::failure(&body_id, &exc, None).with_date_done(Some(Utc::now()));
            store(s, &Routing::default(), meta).await;
        }
        Err(e) => tracing::error!("chord {group}: cannot send its body: {e}"),
    }
    retry("clean up a chord", || chords.chord_done(group)).await;
}

/// Publish continuations; returns the `children` entries of the ones sent.
///
/// The rare paths of a handler (continuations, chords, give-backs, bad input)
/// are boxed where they are awaited: their futures are large, and inline they
/// would make every in-flight task's state that large.
async fn publish_all(s: &Shared, applied: Vec<Result<canvas::Applied, canvas::NotSent>>) -> Option<Vec<Value>> {
    if applied.is_empty() {
        return None;
    }
    Box::pin(publish_each(s, applied)).await
}

/// [`publish_all`]'s work, behind its box. A signature that cannot be sent
/// gets a FAILURE stored under the id its sender waits on (never a client
/// left waiting on a PENDING task); a chord's size is recorded before its
/// header is sent.
async fn publish_each(s: &Shared, applied: Vec<Result<canvas::Applied, canvas::NotSent>>) -> Option<Vec<Value>> {
    let mut children = Vec::new();
    for a in applied {
        let a = match a {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("cannot send a continuation: {e}");
                if let (Some(id), Some(_)) = (&e.id, &s.results) {
                    let meta = ResultMeta::failure(id, &e.exception(), None).with_date_done(Some(Utc::now()));
                    store(s, &Routing::default(), meta).await;
                }
                continue;
            }
        };
        // A chord's bookkeeping first: its size where the backend counts chords, else (the
        // database backend) Celery's fallback, a `celery.chord_unlock` task polling the members.
        let mut unlocks = Vec::new();
        for chord in &a.chords {
            match s.backend.as_ref().and_then(|b| b.chords()) {
                Some(chords) => {
                    let size = chord.members.len() as u64;
                    retry("record a chord's size", || chords.set_chord_size(&chord.group_id, size)).await;
                }
                None if s.backend.is_some() => unlocks.push(chord.unlock.clone()),
                None => tracing::error!("chord {}: no result backend; its body will not run", chord.group_id),
            }
        }
        for task in a.tasks {
            publish_one(s, task, &mut children).await;
        }
        for task in unlocks {
            publish_one(s, task, &mut children).await;
        }
    }
    Some(children)
}

/// Encode and publish one task the worker sends; on success its `children` entry is added.
async fn publish_one(s: &Shared, task: NewTask, children: &mut Vec<Value>) {
    let encoded = match encode(s, &task) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("cannot encode continuation {}[{}]: {e}", task.name, task.id);
            return;
        }
    };
    if retry("publish a continuation", || s.broker.publish(&task.options.queue, &encoded)).await.is_some() {
        children.push(child_tuple(&task.id));
    }
}

/// Children entries of two sends, in order.
fn joined(first: Option<Vec<Value>>, then: Option<Vec<Value>>) -> Option<Vec<Value>> {
    match (first, then) {
        (Some(mut a), Some(b)) => {
            a.extend(b);
            Some(a)
        }
        (a, b) => a.or(b),
    }
}

/// Encode a task the worker sends (a retry, a continuation, a copy put back),
/// signed with the worker's key when `task_serializer = "auth"`.
fn encode(s: &Shared, task: &NewTask) -> Result<EncodedTask, ProtocolError> {
    let encoded = task.encode()?;
    Ok(match &s.signer {
        Some(signer) => encoded.sign(signer.as_ref()),
        None => encoded,
    })
}

/// Celery's `Task.add_to_chord`: `sig` joins the chord `msg` is a member of —
/// its group, index and body — the backend counts one member more, and it is
/// sent. On a backend that counts no chords, its id gets `NotImplementedError`.
async fn add_to_chord(s: &Shared, msg: &TaskMessage, mut sig: Value) {
    let (Some(group), Some(body)) = (&msg.group, &msg.embed.chord) else { return };
    let id = sig.pointer("/options/task_id").and_then(Value::as_str).unwrap_or_default().to_string();
    if let Ok(opts) = crate::protocol::signature::options_mut(&mut sig) {
        opts.insert("group_id".into(), Value::from(group.as_str()));
        opts.insert("group_index".into(), msg.group_index.map(Value::from).unwrap_or(Value::Null));
        opts.insert("chord".into(), body.clone());
    }
    let Some(chords) = s.backend.as_ref().and_then(|b| b.chords()) else {
        let exc = ExceptionInfo::new(
            "NotImplementedError",
            vec![Value::from("add_to_chord: the result backend does not count chords")],
            "builtins",
        );
        store_failure_of(s, &id, &exc).await;
        return;
    };
    if retry("add a member to a chord", || chords.add_to_chord(group)).await.is_none() {
        return;
    }
    publish_all(s, vec![canvas::apply(&sig, None, msg, &s.router())]).await;
}

/// Store `exc` as the FAILURE of `task_id` (not the running task's: a chord's body).
pub(super) async fn store_failure_of(s: &Shared, task_id: &str, exc: &ExceptionInfo) {
    if s.results.is_some() {
        let meta = ResultMeta::failure(task_id, exc, None).with_date_done(Some(Utc::now()));
        store(s, &Routing::default(), meta).await;
    }
}

/// Whether no result is stored for this message (`annotation` is its task's).
fn ignores_result(s: &Shared, msg: &TaskMessage, annotation: &Annotation) -> bool {
    s.backend.is_none()
        // Celery's `chord_unlock` is declared with ignore_result=True: its retries are not stored.
        || builtins::Builtin::named(&msg.task) == Some(builtins::Builtin::ChordUnlock)
        || msg.ignore_result
        || s.settings.task_ignore_result
        || annotation.ignore_result.unwrap_or(false)
}

/// A meta with the message's lineage and `date_done` filled in.
fn base_meta(msg: &TaskMessage, meta: ResultMeta) -> ResultMeta {
    let ready = meta.status.is_ready();
    meta.with_group_id(msg.group.clone()).with_parent_id(msg.parent_id.clone()).with_date_done(ready.then(Utc::now))
}

/// Store a FAILURE (or NotRegistered...) for a message, if results are on for it.
async fn store_exception(
    s: &Shared,
    msg: &TaskMessage,
    routing: &Routing,
    exc: &ExceptionInfo,
    traceback: Option<String>,
) {
    if !ignores_result(s, msg, &s.annotation(&msg.task)) {
        store(s, routing, base_meta(msg, ResultMeta::failure(&msg.id, exc, traceback))).await;
    }
}

/// Store a state (with the next batch) and wait until it is written.
async fn store(s: &Shared, routing: &Routing, meta: ResultMeta) {
    if let Some(r) = &s.results {
        r.write(Reply { meta, routing: routing.clone() }).await;
    }
}

/// The request context the guest sees (`self.request`).
fn request_context(s: &Shared, msg: &TaskMessage) -> Request {
    Request {
        id: msg.id.clone(),
        name: msg.task.clone(),
        retries: msg.retries,
        eta: msg.eta.map(|t| t.to_rfc3339()),
        expires: msg.expires.map(|t| t.to_rfc3339()),
        root_id: msg.root_id.clone(),
        parent_id: msg.parent_id.clone(),
        group_id: msg.group.clone(),
        hostname: s.hostname.clone(),
        headers: msg.headers.clone(),
        delivery_info: delivery_info(msg),
        in_chord: msg.embed.chord.is_some() && msg.group.is_some(),
    }
}

/// Celery's `request.delivery_info` with the message properties a task may read.
fn delivery_info(msg: &TaskMessage) -> serde_json::Map<String, Value> {
    let d = &msg.delivery;
    let mut m = serde_json::Map::new();
    m.insert("exchange".into(), Value::from(d.exchange.as_str()));
    m.insert("routing_key".into(), Value::from(d.routing_key.as_str()));
    m.insert("priority".into(), d.priority.map(Value::from).unwrap_or(Value::Null));
    m.insert("redelivered".into(), Value::from(d.redelivered));
    m.insert("reply_to".into(), d.reply_to.clone().map(Value::from).unwrap_or(Value::Null));
    m.insert("correlation_id".into(), d.correlation_id.clone().map(Value::from).unwrap_or(Value::Null));
    m.insert("content_type".into(), Value::from(msg.content_type.as_str()));
    m
}
