//! The desk's pages and the citizen's pre-registration page. Server-rendered, one script
//! of our own (passkeys and the camera), keyboard-first: the field to fill next has the
//! focus, every action is a button in the tab order, the status of the case is at the
//! top of its page.

use eid_core::{DocumentType, web::escape};

use crate::{
    Application, ApplicationStatus, RemoteCredential,
    case::Case,
    lifecycle::{
        CurrentCard, DeactivateReason, LifecycleEvent, Reason, ReplaceReason, SuspendReason,
    },
    record::Receipt,
    remote::WithdrawReason,
    staff::{Desk, DeskSession},
};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:1.5rem auto;\
padding:0 1rem;color:#111;background:#fff;line-height:1.45}h1{font-size:1.5rem}\
h2{font-size:1.15rem;margin-top:1.6rem;border-bottom:1px solid #ccd}\
header{display:flex;justify-content:space-between;align-items:baseline;border-bottom:3px solid #0b3d91}\
label{display:block;margin:.4rem 0 .1rem;font-weight:600}\
input,select,textarea{font:inherit;padding:.35rem;border:1px solid #667;border-radius:.2rem;min-width:16rem}\
textarea{font-family:ui-monospace,monospace;width:100%;min-width:0}\
button,a.button{display:inline-block;font:inherit;padding:.5rem 1rem;margin:.4rem .3rem .4rem 0;\
border:2px solid #0b3d91;border-radius:.3rem;background:#0b3d91;color:#fff;text-decoration:none;cursor:pointer}\
button.secondary{background:#fff;color:#0b3d91}button.danger{background:#b00020;border-color:#b00020}\
:focus{outline:3px solid #f4a000;outline-offset:2px}\
.status{font-weight:700;padding:.15rem .5rem;border-radius:.2rem;background:#e8eefc}\
.error{border-left:5px solid #b00020;padding:.4rem .8rem;background:#fdecee}\
.notice{border-left:5px solid #1b7f3a;padding:.4rem .8rem;background:#e9f7ee}\
.warning{border-left:5px solid #b26a00;padding:.4rem .8rem;background:#fff4e0}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #dde}\
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(17rem,1fr));gap:0 1rem}\
@media print{header form,button,form,.noprint{display:none}}";

/// A whole page around `body` (already escaped where needed).
fn page(title: &str, header: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style><script src=\"/static/desk.js\" defer></script>\
         </head><body><header><strong>eID enrolment</strong>{header}</header><main>{body}</main>\
         </body></html>",
        escape(title),
    )
}

fn desk_header(desk: &Desk) -> String {
    format!(
        "<span id=\"desk\">{} · {}</span>",
        escape(&desk.centre_name),
        escape(&desk.name)
    )
}

fn session_header(session: &DeskSession, csrf: &str) -> String {
    format!(
        "<span id=\"desk\">{} · {} · <span id=\"staff\">{} ({})</span></span>\
         <form method=\"post\" action=\"/desk/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button class=\"secondary\" type=\"submit\">Log out</button></form>",
        escape(&session.desk.centre_name),
        escape(&session.desk.name),
        escape(&session.staff_name),
        escape(session.role.name()),
        escape(csrf)
    )
}

/// A message above the page's content: an error (role alert) or a notice.
pub(crate) fn message(error: Option<&str>, notice: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(e) = error {
        out.push_str(&format!(
            "<p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
            escape(e)
        ));
    }
    if let Some(n) = notice {
        out.push_str(&format!(
            "<p class=\"notice\" role=\"status\" id=\"notice\">{}</p>",
            escape(n)
        ));
    }
    out
}

/// An error page.
pub(crate) fn error(message_text: &str) -> String {
    page(
        "Error",
        "",
        &format!(
            "<h1>Something is wrong</h1>{}<p><a href=\"/desk\">Back to the desk</a></p>",
            message(Some(message_text), None)
        ),
    )
}

/// This browser is not a registered desk.
pub(crate) fn unregistered() -> String {
    page(
        "Unregistered workstation",
        "",
        "<h1>This workstation is not a registered desk</h1>\
         <p>An administrator registers it with a one-time link from \
         <code>eid enrolment desk add</code>. Clerks can only work at a registered desk.</p>",
    )
}

/// The desk was just registered.
pub(crate) fn desk_registered(desk: &Desk) -> String {
    page(
        "Desk registered",
        &desk_header(desk),
        &format!(
            "<h1>Desk registered</h1><p class=\"notice\" id=\"notice\">This browser is now desk \
             <strong>{}</strong> at {}.</p><p><a class=\"button\" href=\"/desk\" autofocus>Go to the desk</a></p>",
            escape(&desk.name),
            escape(&desk.centre_name)
        ),
    )
}

/// The staff login page.
pub(crate) fn login(desk: &Desk, card: bool) -> String {
    let card = if card {
        "<h2>Or with your ID card</h2>\
         <form method=\"post\" action=\"/desk/login/card\">\
         <button type=\"submit\" id=\"card-login\">Log in with ID card</button></form>\
         <p>Put your own ID card in the reader first; the browser asks for its PIN1.</p>"
    } else {
        ""
    };
    page(
        "Desk login",
        &desk_header(desk),
        &format!(
            "<h1>Log in</h1>\
         <form id=\"login\" data-start=\"/desk/api/login/start\" data-finish=\"/desk/api/login/finish\">\
         <label for=\"staff-id\">Staff id</label>\
         <input id=\"staff-id\" name=\"staff_id\" autocomplete=\"username webauthn\" autofocus required>\
         <button type=\"submit\">Log in with passkey</button></form>\
         <p class=\"error\" id=\"passkey-error\" role=\"alert\" hidden></p>\
         <p>Your passkey asks for your fingerprint, face or device PIN.</p>{card}"
        ),
    )
}

/// A staff member enrols their passkey.
pub(crate) fn staff_enrol(desk: &Desk, staff_id: &str, name: &str, token: &str) -> String {
    page(
        "Enrol your passkey",
        &desk_header(desk),
        &format!(
            "<h1>Enrol your passkey</h1><p>{} (<code>{}</code>): create the passkey you will log in \
             with at this centre.</p>\
             <button id=\"enrol\" data-start=\"/desk/api/enrol/{token}/start\" \
             data-finish=\"/desk/api/enrol/{token}/finish\" autofocus>Create passkey</button>\
             <p class=\"error\" id=\"passkey-error\" role=\"alert\" hidden></p>",
            escape(name),
            escape(staff_id),
            token = escape(token)
        ),
    )
}

fn status(status: ApplicationStatus) -> String {
    format!(
        "<span class=\"status\" id=\"status\">{}</span>",
        escape(status.name())
    )
}

/// The clerk's start page: search.
pub(crate) fn dashboard(
    session: &DeskSession,
    csrf: &str,
    recent: &[Application],
    error: Option<&str>,
) -> String {
    let rows: String = recent
        .iter()
        .map(|a| {
            format!(
                "<tr><td><a href=\"/desk/applications/{}\">{}</a></td><td>{} {}</td><td>{}</td><td>{}</td></tr>",
                escape(&a.application_id),
                escape(&a.reference),
                escape(&a.given_name),
                escape(&a.family_name),
                escape(&a.birth_date),
                status(a.status)
            )
        })
        .collect();
    page(
        "Desk",
        &session_header(session, csrf),
        &format!(
            "<h1>Find an application</h1>{}\
             <form method=\"get\" action=\"/desk/search\"><label for=\"q\">Reference or national \
             identity number</label><input id=\"q\" name=\"q\" autofocus required>\
             <button type=\"submit\">Find</button></form>\
             <h2>Latest applications</h2><table><thead><tr><th>Reference</th><th>Name</th>\
             <th>Born</th><th>Status</th></tr></thead><tbody>{rows}</tbody></table>",
            message(error, None)
        ),
    )
}

fn hidden(csrf: &str, version: i64) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"version\" value=\"{version}\">",
        escape(csrf)
    )
}

/// What the case page needs besides the case.
pub(crate) struct CaseView<'a> {
    pub(crate) session: &'a DeskSession,
    pub(crate) csrf: &'a str,
    pub(crate) case: &'a Case,
    pub(crate) document_types: &'a [DocumentType],
    /// The reader's description and the blank cards in it.
    pub(crate) reader: Option<(String, Vec<String>)>,
    pub(crate) error: Option<&'a str>,
    pub(crate) notice: Option<&'a str>,
    /// The document form's previous values, after a refusal.
    pub(crate) document: Option<&'a crate::case::DocumentInput>,
    pub(crate) activations: &'a [crate::activation::ActivationSummary],
    /// The steps since activation.
    pub(crate) lifecycle: &'a [LifecycleEvent],
    /// The citizen's current card.
    pub(crate) current_card: Option<&'a CurrentCard>,
    /// The citizen's remote signing credentials (or why they could not be listed);
    /// none when the desk offers no remote signing or the identity is not active yet.
    pub(crate) remote: Option<&'a Result<Vec<RemoteCredential>, String>>,
    /// Why no credential can be created now, if so.
    pub(crate) remote_refusal: Option<&'a str>,
    /// Whether a supervisor may approve with their ID card here (as well as a passkey).
    pub(crate) card_approval: bool,
}

/// The button that sends a supervisor's approval to the desk's card listener instead
/// of asking for a passkey (`data-card`: the page's script lets the form go). The form
/// carries `csrf` and `version`; the supervisor's staff id is the card's, not typed.
fn card_approval_button(view: &CaseView<'_>, id: &str, action: &str, button_id: &str) -> String {
    if !view.card_approval {
        return String::new();
    }
    format!(
        " <button type=\"submit\" id=\"{button_id}\" class=\"secondary\" data-card formnovalidate \
         formmethod=\"post\" formaction=\"/desk/applications/{id}/{action}/card\">\
         Supervisor approves with ID card</button>"
    )
}

/// The PIN fields of a new card (activation and replacement): PIN1, PIN2 and the PUK,
/// each twice. `prefix` keeps the element ids apart when two forms share a page.
fn card_pin_fields(prefix: &str) -> String {
    let pin = |name: &str, label: &str, min: usize| {
        format!(
            "<div><label for=\"{prefix}{name}\">{label}</label><input id=\"{prefix}{name}\" name=\"{name}\" \
             type=\"password\" inputmode=\"numeric\" autocomplete=\"off\" minlength=\"{min}\" maxlength=\"12\" required></div>"
        )
    };
    format!(
        "<div class=\"grid\">{}{}{}{}{}{}</div>",
        pin("pin1", "PIN1 (4-12 digits, logging in)", 4),
        pin("pin1_confirm", "PIN1 again", 4),
        pin("pin2", "PIN2 (5-12 digits, signing)", 5),
        pin("pin2_confirm", "PIN2 again", 5),
        pin("puk", "PUK (8-12 digits)", 8),
        pin("puk_confirm", "PUK again", 8),
    )
}

/// A date and time for people: `2026-11-21 14:05 UTC`.
fn when(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// A `<select>` of reasons from a fixed list, nothing chosen yet.
fn reason_select<R: Reason>(id: &str) -> String {
    let options: String = R::ALL
        .iter()
        .map(|r| {
            format!(
                "<option value=\"{}\">{}</option>",
                escape(r.code()),
                escape(r.label())
            )
        })
        .collect();
    format!(
        "<select id=\"{id}\" name=\"reason\" required><option value=\"\">Choose…</option>{options}</select>"
    )
}

/// Section 7 of the case page: the current card, the steps since activation, and the
/// forms the identity's status allows (suspend or resume, unblock a PIN, replace the
/// card, deactivate).
fn lifecycle_section(view: &CaseView<'_>) -> String {
    let a = &view.case.application;
    let status = a.status;
    if !matches!(
        status,
        ApplicationStatus::Approved
            | ApplicationStatus::Active
            | ApplicationStatus::Suspended
            | ApplicationStatus::Deactivated
    ) {
        return String::new();
    }
    let id = escape(&a.application_id);
    let csrf = view.csrf;
    let mut body = String::from("<h2>7. Card and identity</h2>");
    if let Some(card) = view.current_card {
        body.push_str(&format!(
            "<p id=\"current-card\">Current card <strong id=\"current-token\">{}</strong>; certificates <span id=\"current-certificates\">{}</span></p>",
            escape(&card.token_id),
            escape(&card.serials.join(", "))
        ));
    }
    if !view.lifecycle.is_empty() {
        body.push_str(
            "<table id=\"lifecycle\"><thead><tr><th>When</th><th>Step</th><th>Reason</th>\
             <th>By</th><th>Certificates</th></tr></thead><tbody>",
        );
        for e in view.lifecycle {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}{}</td><td>{}{}</td><td>{}{} at {}</td><td>{}</td></tr>",
                escape(&when(e.created_at)),
                escape(&e.action),
                e.token_id
                    .as_deref()
                    .map(|t| format!(" ({})", escape(t)))
                    .unwrap_or_default(),
                escape(e.reason.as_deref().unwrap_or("")),
                e.note
                    .as_deref()
                    .map(|n| format!(" — {}", escape(n)))
                    .unwrap_or_default(),
                escape(&e.clerk_id),
                e.supervisor_id
                    .as_deref()
                    .map(|s| format!(", approved by {}", escape(s)))
                    .unwrap_or_default(),
                escape(&e.desk_id),
                escape(&e.serials.join(", "))
            ));
        }
        body.push_str("</tbody></table>");
    }
    if status == ApplicationStatus::Deactivated {
        body.push_str(&format!(
            "<p class=\"warning\" id=\"deactivated\">Deactivated ({}) since {}. Every certificate is \
             revoked; a deactivation is final.</p>",
            escape(a.status_reason.as_deref().unwrap_or("")),
            escape(&when(a.status_since))
        ));
        return body;
    }
    let card_steps = matches!(
        status,
        ApplicationStatus::Active | ApplicationStatus::Suspended
    );
    if status == ApplicationStatus::Active {
        body.push_str(&format!(
            "<h3>Suspend (card lost)</h3>\
             <form method=\"post\" action=\"/desk/applications/{id}/suspend\" id=\"suspend-form\">{}\
             <div class=\"grid\"><div><label for=\"suspend-reason\">Why</label>{}</div>\
             <div><label for=\"suspend-note\">Note</label><input id=\"suspend-note\" name=\"note\" maxlength=\"500\"></div></div>\
             <button type=\"submit\" class=\"danger\" id=\"suspend\">Suspend every certificate</button></form>",
            hidden(csrf, a.version),
            reason_select::<SuspendReason>("suspend-reason"),
        ));
    }
    if status == ApplicationStatus::Suspended {
        body.push_str(&format!(
            "<h3>Resume (card found)</h3>\
             <form method=\"post\" action=\"/desk/applications/{id}/resume\" id=\"resume-form\">{}\
             <label for=\"resume-note\">Note</label><input id=\"resume-note\" name=\"note\" maxlength=\"500\">\
             <button type=\"submit\" id=\"resume\" autofocus>Resume the certificates</button></form>",
            hidden(csrf, a.version),
        ));
    }
    if card_steps {
        let secret = |name: &str, label: &str, min: usize| {
            format!(
                "<div><label for=\"unblock-{name}\">{label}</label><input id=\"unblock-{name}\" name=\"{name}\" \
                 type=\"password\" inputmode=\"numeric\" autocomplete=\"off\" minlength=\"{min}\" maxlength=\"12\" required></div>"
            )
        };
        body.push_str(&format!(
            "<h3>Unblock a PIN with the PUK</h3>\
             <p>The citizen's card in the reader; the citizen types the PUK and the new PIN.</p>\
             <form method=\"post\" action=\"/desk/applications/{id}/unblock\" id=\"unblock-form\">{}\
             <div class=\"grid\"><div><label for=\"unblock-pin\">PIN</label><select id=\"unblock-pin\" name=\"pin\">\
             <option value=\"pin1\">PIN1 (logging in)</option><option value=\"pin2\">PIN2 (signing)</option></select></div>\
             {}{}{}</div>\
             <button type=\"submit\" id=\"unblock\">Unblock the PIN</button></form>",
            hidden(csrf, a.version),
            secret("puk", "PUK", 8),
            secret("new_pin", "New PIN", 4),
            secret("new_pin_confirm", "New PIN again", 4),
        ));
        match &view.reader {
            Some((reader, cards)) => {
                let cards_field = if cards.is_empty() {
                    "<p class=\"warning\" id=\"replace-no-card\">No blank card in the reader: insert one and reload.</p>"
                        .to_owned()
                } else {
                    let options: String = cards
                        .iter()
                        .map(|c| format!("<option value=\"{0}\">{0}</option>", escape(c)))
                        .collect();
                    format!(
                        "<div><label for=\"replace-card\">New card</label><select id=\"replace-card\" name=\"card\">{options}</select></div>"
                    )
                };
                body.push_str(&format!(
                    "<h3>Replace the card</h3>\
                     <p>Reader: {}. The old card's certificates are revoked, then a blank card is \
                     activated with the PINs the citizen chooses now.</p>\
                     <form method=\"post\" action=\"/desk/applications/{id}/replace\" id=\"replace-form\">{}\
                     <div class=\"grid\"><div><label for=\"replace-reason\">Why</label>{}</div>{cards_field}</div>{}\
                     <button type=\"submit\" id=\"replace\">Revoke the old card and activate the new one</button></form>",
                    escape(reader),
                    hidden(csrf, a.version),
                    reason_select::<ReplaceReason>("replace-reason"),
                    card_pin_fields("replace-"),
                ));
            }
            None => body.push_str(
                "<p class=\"warning\">This desk has no card reader configured: PINs are unblocked and cards replaced at a desk with one.</p>",
            ),
        }
    }
    body.push_str(&format!(
        "<h3>Deactivate the identity</h3>\
         <p>Final: every certificate is revoked and relying services are told. A supervisor \
         approves now, with their own passkey or ID card.</p>\
         <form id=\"deactivate\" data-start=\"/desk/api/applications/{id}/deactivate/start\" \
         data-finish=\"/desk/api/applications/{id}/deactivate/finish\" data-csrf=\"{}\" data-version=\"{}\">\
         <div class=\"grid\"><div><label for=\"deactivate-reason\">Why</label>{}</div>\
         <div><label for=\"deactivate-note\">Evidence (e.g. death certificate number)</label>\
         <input id=\"deactivate-note\" name=\"note\" maxlength=\"500\" required></div>\
         <div><label for=\"deactivate-supervisor\">Supervisor's staff id</label>\
         <input id=\"deactivate-supervisor\" name=\"supervisor_id\" required></div></div>{}\
         <button type=\"submit\" class=\"danger\">Supervisor approves the deactivation with passkey</button>{}</form>\
         <p class=\"error\" id=\"passkey-error\" role=\"alert\" hidden></p>",
        escape(csrf),
        a.version,
        reason_select::<DeactivateReason>("deactivate-reason"),
        hidden(csrf, a.version),
        card_approval_button(view, &id, "deactivate", "deactivate-card"),
    ));
    body
}

/// Section 8 of the case page: the citizen's remote signing credentials on the signing
/// service's HSM, with unlock and withdraw, and the form creating one (for an active
/// identity).
fn remote_section(view: &CaseView<'_>) -> String {
    let Some(listing) = view.remote else {
        return String::new();
    };
    let a = &view.case.application;
    let id = escape(&a.application_id);
    let mut body = String::from("<h2>8. Remote signing</h2>");
    let credentials = match listing {
        Ok(credentials) => credentials.as_slice(),
        Err(e) => {
            body.push_str(&format!(
                "<p class=\"warning\" id=\"remote-unavailable\">{}</p>",
                escape(e)
            ));
            return body;
        }
    };
    if credentials.is_empty() {
        body.push_str("<p id=\"remote-none\">No remote signing credential.</p>");
    } else {
        body.push_str(
            "<table id=\"remote-credentials\"><thead><tr><th>Credential</th><th>Certificate</th>\
             <th>Status</th><th></th></tr></thead><tbody>",
        );
        for c in credentials {
            let mut actions = String::new();
            if c.status == "locked" && a.status == ApplicationStatus::Active {
                actions.push_str(&format!(
                    "<form method=\"post\" action=\"/desk/applications/{id}/remote/unlock\">{}\
                     <input type=\"hidden\" name=\"credential\" value=\"{}\">\
                     <button type=\"submit\" class=\"unlock-remote\">Unlock (citizen is here)</button></form>",
                    hidden(view.csrf, a.version),
                    escape(&c.credential_id),
                ));
            }
            if c.status != "disabled" {
                actions.push_str(&format!(
                    "<form method=\"post\" action=\"/desk/applications/{id}/remote/withdraw\" class=\"withdraw-remote\">{}\
                     <input type=\"hidden\" name=\"credential\" value=\"{}\">\
                     <label for=\"withdraw-{1}\">Why</label>{}\
                     <button type=\"submit\" class=\"danger\">Withdraw</button></form>",
                    hidden(view.csrf, a.version),
                    escape(&c.credential_id),
                    reason_select::<WithdrawReason>(&format!("withdraw-{}", escape(&c.credential_id))),
                ));
            }
            body.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"remote-status\">{}</td><td>{actions}</td></tr>",
                escape(&c.credential_id),
                escape(&c.serial),
                escape(match c.status.as_str() {
                    "active" => "active",
                    "locked" => "locked (wrong PINs)",
                    "disabled" => "withdrawn",
                    other => other,
                }),
            ));
        }
        body.push_str("</tbody></table>");
    }
    if let (ApplicationStatus::Active, Some(refusal)) = (a.status, view.remote_refusal) {
        body.push_str(&format!(
            "<p class=\"warning\" id=\"remote-refused\">No new credential at this desk: {}</p>",
            escape(refusal)
        ));
    } else if a.status == ApplicationStatus::Active {
        let pin = |name: &str, label: &str| {
            format!(
                "<div><label for=\"remote-{name}\">{label}</label><input id=\"remote-{name}\" name=\"{name}\" \
                 type=\"password\" inputmode=\"numeric\" autocomplete=\"off\" minlength=\"5\" maxlength=\"12\" required></div>"
            )
        };
        body.push_str(&format!(
            "<h3>New remote signing credential</h3>\
             <p>A signing key on the signing service's HSM with a qualified certificate. The \
             citizen logs in (card, SIM or passkey) and signs with the signing PIN chosen now.</p>\
             <form method=\"post\" action=\"/desk/applications/{id}/remote\" id=\"remote-form\">{}\
             <div class=\"grid\">{}{}</div>\
             <button type=\"submit\" id=\"remote-create\">Create the credential</button></form>",
            hidden(view.csrf, a.version),
            pin("pin", "Signing PIN (5-12 digits)"),
            pin("pin_confirm", "Signing PIN again"),
        ));
    }
    body
}

/// The case page: everything about one application, and the next step.
pub(crate) fn case(view: &CaseView<'_>) -> String {
    let case = view.case;
    let a = &case.application;
    let id = escape(&a.application_id);
    let csrf = view.csrf;
    let mut body = format!(
        "<h1>{} {} {}</h1>{}",
        escape(&a.given_name),
        escape(&a.family_name),
        status(a.status),
        message(view.error, view.notice)
    );
    body.push_str(&format!(
        "<div class=\"grid\"><p>Reference <strong id=\"reference\">{}</strong></p>\
         <p>National identity number <strong id=\"national-id\">{}</strong></p>\
         <p>Born <strong>{}</strong></p><p>Address {}</p><p>Contact {} {}</p></div>",
        escape(&a.reference),
        escape(&a.national_id),
        escape(&a.birth_date),
        escape(&a.address),
        escape(a.email.as_deref().unwrap_or("")),
        escape(a.phone.as_deref().unwrap_or(""))
    ));
    if let Some(reason) = &a.status_reason {
        body.push_str(&format!("<p>Reason: {}</p>", escape(reason)));
    }
    let pending = a.status == ApplicationStatus::Pending;
    let missing = case.missing();
    if pending && !missing.is_empty() {
        body.push_str(&format!(
            "<p class=\"warning\" id=\"missing\">Still needed: {}.</p>",
            escape(&missing.join("; "))
        ));
    }

    // 1. Consent.
    body.push_str("<h2>1. Consent</h2>");
    match a.consent_at {
        Some(_) => body.push_str("<p id=\"consent\">Consent recorded.</p>"),
        None if pending => body.push_str(&format!(
            "<form method=\"post\" action=\"/desk/applications/{id}/consent\">{}\
             <p>Read the privacy notice to the citizen; record their consent to the processing \
             of their data for the national identity.</p>\
             <button type=\"submit\" id=\"record-consent\">Record consent</button></form>",
            hidden(csrf, a.version)
        )),
        None => body.push_str("<p>No consent recorded.</p>"),
    }

    // 2. Documents.
    body.push_str("<h2>2. Identity documents</h2>");
    if case.documents.is_empty() {
        body.push_str("<p>None recorded yet. Two are needed.</p>");
    } else {
        body.push_str(
            "<table id=\"documents\"><thead><tr><th>Type</th><th>Issuer</th><th>Number</th>\
             <th>Expires</th><th>Name on it</th><th>Check</th></tr></thead><tbody>",
        );
        for d in &case.documents {
            let check = match (d.name_matches && d.birth_matches, d.mrz_checked) {
                (true, true) => "MRZ valid, matches",
                (true, false) => "matches",
                (false, _) => "MISMATCH",
            };
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} {} ({})</td><td>{}</td></tr>",
                escape(&d.doc_type),
                escape(&d.issuer),
                escape(&d.number),
                escape(&d.expiry),
                escape(&d.given_names),
                escape(&d.surname),
                escape(&d.birth_date),
                check
            ));
        }
        body.push_str("</tbody></table>");
    }
    if pending {
        let previous = view.document.cloned().unwrap_or_default();
        let options: String = view
            .document_types
            .iter()
            .map(|t| {
                format!(
                    "<option value=\"{}\" data-mrz=\"{}\"{}>{}</option>",
                    escape(&t.code),
                    escape(t.mrz.as_deref().unwrap_or("")),
                    if t.code == previous.doc_type {
                        " selected"
                    } else {
                        ""
                    },
                    escape(&t.name)
                )
            })
            .collect();
        let field = |name: &str, label: &str, value: &str, extra: &str| {
            format!(
                "<div><label for=\"{name}\">{label}</label><input id=\"{name}\" name=\"{name}\" value=\"{}\"{extra}></div>",
                escape(value)
            )
        };
        body.push_str(&format!(
            "<form method=\"post\" action=\"/desk/applications/{id}/documents\" id=\"document-form\">{}\
             <div class=\"grid\"><div><label for=\"doc_type\">Document type</label>\
             <select id=\"doc_type\" name=\"doc_type\"{}>{options}</select></div>{}{}{}</div>\
             <label for=\"mrz\">Machine-readable zone (documents that have one; one line per row)</label>\
             <textarea id=\"mrz\" name=\"mrz\" rows=\"3\" spellcheck=\"false\" autocapitalize=\"characters\">{}</textarea>\
             <p class=\"note\">For documents without a zone, type the name and date of birth as printed:</p>\
             <div class=\"grid\">{}{}{}</div>\
             <button type=\"submit\" id=\"record-document\">Check and record document</button></form>",
            hidden(csrf, a.version),
            if view.error.is_some() && view.document.is_some() { " autofocus" } else { "" },
            field("issuer", "Issuer (state code or authority)", &previous.issuer, ""),
            field("number", "Document number", &previous.number, " required"),
            field("expiry", "Expiry date (YYYY-MM-DD)", &previous.expiry, " required placeholder=\"2031-12-31\""),
            escape(&previous.mrz),
            field("surname", "Surname", &previous.surname, ""),
            field("given_names", "Given names", &previous.given_names, ""),
            field("birth_date", "Date of birth (YYYY-MM-DD)", &previous.birth_date, ""),
        ));
    }

    // 3. Photo.
    body.push_str("<h2>3. Photo (optional)</h2>");
    match &case.photo_sha256 {
        Some(hash) => body.push_str(&format!(
            "<p><img src=\"/desk/applications/{id}/photo\" alt=\"Photo of the citizen\" height=\"160\"></p>\
             <p>SHA-256 <code id=\"photo-hash\">{}</code></p>",
            escape(hash)
        )),
        None => body.push_str("<p>No photo.</p>"),
    }
    if pending {
        body.push_str(&format!(
            "<div id=\"camera\" data-upload=\"/desk/applications/{id}/photo\" data-csrf=\"{}\">\
             <button type=\"button\" class=\"secondary\" id=\"camera-start\">Start camera</button>\
             <video id=\"camera-video\" autoplay playsinline muted hidden width=\"320\"></video>\
             <button type=\"button\" id=\"camera-capture\" hidden>Capture photo</button></div>\
             <p class=\"error\" id=\"camera-error\" role=\"alert\" hidden></p>",
            escape(csrf)
        ));
    }

    // 4. Exceptions.
    body.push_str("<h2>4. Exceptions</h2>");
    if case.exceptions.is_empty() {
        body.push_str("<p id=\"exceptions\">None.</p>");
    } else {
        body.push_str("<ul id=\"exceptions\">");
        for (e, approved) in &case.exceptions {
            body.push_str(&format!(
                "<li>{} — <strong>{}</strong></li>",
                escape(&e.description),
                if *approved {
                    "approved by a supervisor"
                } else {
                    "needs a supervisor"
                }
            ));
        }
        body.push_str("</ul>");
        if pending && !case.open_exceptions().is_empty() {
            body.push_str(&format!(
                "<form id=\"approve\" data-start=\"/desk/api/applications/{id}/approve/start\" \
                 data-finish=\"/desk/api/applications/{id}/approve/finish\" data-csrf=\"{}\" data-version=\"{}\">\
                 <label for=\"supervisor-id\">Supervisor's staff id</label>\
                 <input id=\"supervisor-id\" name=\"supervisor_id\" required>{}\
                 <button type=\"submit\">Supervisor approves with passkey</button>{}</form>\
                 <p class=\"error\" id=\"passkey-error\" role=\"alert\" hidden></p>",
                escape(csrf),
                a.version,
                hidden(csrf, a.version),
                card_approval_button(view, &id, "approve", "approve-card"),
            ));
        }
    }

    // 5. Decision.
    body.push_str("<h2>5. Decision</h2>");
    if pending {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/desk/applications/{id}/approve\">{}\
             <button type=\"submit\" id=\"approve-case\">Identity verified: approve</button></form>",
            hidden(csrf, a.version)
        ));
    }
    if matches!(
        a.status,
        ApplicationStatus::Pending | ApplicationStatus::Approved
    ) {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/desk/applications/{id}/reject\">{}\
             <label for=\"reason\">Reason for rejection</label><input id=\"reason\" name=\"reason\">\
             <button type=\"submit\" class=\"danger\" id=\"reject-case\">Reject</button></form>",
            hidden(csrf, a.version)
        ));
    }
    for d in &case.decisions {
        body.push_str(&format!(
            "<p class=\"decision\">{}: {}{}{}</p>",
            escape(&d.kind),
            escape(&d.clerk_id),
            d.supervisor_id
                .as_deref()
                .map(|s| format!(", approved by {}", escape(s)))
                .unwrap_or_default(),
            d.reason
                .as_deref()
                .filter(|_| d.kind != "exception")
                .map(|r| format!(" — {}", escape(r)))
                .unwrap_or_default()
        ));
    }

    // 6. Activation.
    body.push_str("<h2>6. Activation</h2>");
    for s in view.activations {
        body.push_str(&format!(
            "<p class=\"activation\">{} {}: <strong>{}</strong>{}</p>",
            escape(&s.carrier),
            escape(&s.token_id),
            escape(&s.state),
            s.error
                .as_deref()
                .map(|e| format!(" — {}", escape(e)))
                .unwrap_or_default()
        ));
    }
    match (a.status, &view.reader) {
        (ApplicationStatus::Approved, Some((reader, cards))) => {
            let options: String = cards
                .iter()
                .map(|c| format!("<option value=\"{0}\">{0}</option>", escape(c)))
                .collect();
            let cards_field = if cards.is_empty() {
                "<p class=\"warning\" id=\"no-card\">No blank card in the reader: insert one and reload.</p>".to_owned()
            } else {
                format!(
                    "<div><label for=\"card\">Card</label><select id=\"card\" name=\"card\">{options}</select></div>"
                )
            };
            body.push_str(&format!(
                "<p>Reader: {}. Put a blank card in the reader; the citizen types the PINs they chose.</p>\
                 <form method=\"post\" action=\"/desk/applications/{id}/activate\">{}\
                 {cards_field}{}\
                 <button type=\"submit\" id=\"activate\">Activate card</button></form>",
                escape(reader),
                hidden(csrf, a.version),
                card_pin_fields(""),
            ));
        }
        (ApplicationStatus::Approved, None) => {
            body.push_str("<p class=\"warning\">This desk has no card reader configured.</p>");
        }
        (ApplicationStatus::Active | ApplicationStatus::Suspended, _) => body.push_str(&format!(
            "<p><a class=\"button\" id=\"receipt\" href=\"/desk/applications/{id}/receipt\">Print the receipt</a></p>"
        )),
        (ApplicationStatus::Deactivated, _) => {}
        _ => body.push_str("<p>Activation follows approval.</p>"),
    }

    // 7. The identity's life after activation.
    body.push_str(&lifecycle_section(view));
    body.push_str(&remote_section(view));
    body.push_str("<p class=\"noprint\"><a href=\"/desk\">Back to search</a></p>");
    page(
        &format!("{} {}", a.given_name, a.family_name),
        &session_header(view.session, csrf),
        &body,
    )
}

/// The printable receipt.
pub(crate) fn receipt(receipt: &Receipt) -> String {
    page(
        "Receipt",
        "",
        &format!(
            "<h1>National identity: receipt</h1>\
             <p>Name <strong>{} {}</strong></p><p>National identity number <strong id=\"national-id\">{}</strong></p>\
             <p>Reference {}</p><p>Activated {} at {}, desk {}</p><p>{} <strong>{}</strong></p>\
             <p>Certificates {}</p><p>Record seal (SHA-256) <code id=\"record-hash\">{}</code></p>\
             <p class=\"note\">Keep your PIN1, PIN2 and PUK secret; nobody from the service will ask \
             for them. If you lose the card, suspend it in your account or at a service centre.</p>\
             <button type=\"button\" id=\"print\" class=\"noprint\">Print</button>",
            escape(&receipt.given_name),
            escape(&receipt.family_name),
            escape(&receipt.national_id),
            escape(&receipt.reference),
            escape(&receipt.activated_at),
            escape(&receipt.centre),
            escape(&receipt.desk),
            escape(match receipt.carrier.as_str() {
                "card" => "ID card",
                "sim" => "SIM",
                "remote" => "Remote signing credential",
                other => other,
            }),
            escape(&receipt.token_id),
            escape(&receipt.certificates.join(", ")),
            escape(&receipt.sha256)
        ),
    )
}

/// The pre-registration form.
pub(crate) fn apply(error: Option<&str>, values: Option<&crate::NewApplication>) -> String {
    let v =
        |f: fn(&crate::NewApplication) -> Option<&str>| escape(values.and_then(f).unwrap_or(""));
    page(
        "Apply for a national identity",
        "",
        &format!(
            "<h1>Apply for a national identity</h1>{}\
             <p>Fill in your details. You will get a reference and your national identity number; \
             then visit a service centre with <strong>two identity documents</strong> to have your \
             identity verified and your ID card activated.</p>\
             <form method=\"post\" action=\"/apply\"><div class=\"grid\">\
             <div><label for=\"given_name\">Given names</label><input id=\"given_name\" name=\"given_name\" value=\"{}\" required autofocus autocomplete=\"given-name\"></div>\
             <div><label for=\"family_name\">Family name</label><input id=\"family_name\" name=\"family_name\" value=\"{}\" required autocomplete=\"family-name\"></div>\
             <div><label for=\"birth_date\">Date of birth</label><input id=\"birth_date\" name=\"birth_date\" type=\"date\" value=\"{}\" required autocomplete=\"bday\"></div>\
             <div><label for=\"email\">E-mail (optional)</label><input id=\"email\" name=\"email\" type=\"email\" value=\"{}\" autocomplete=\"email\"></div>\
             <div><label for=\"phone\">Phone (optional)</label><input id=\"phone\" name=\"phone\" type=\"tel\" value=\"{}\" autocomplete=\"tel\"></div>\
             </div><label for=\"address\">Address</label><textarea id=\"address\" name=\"address\" rows=\"2\" required autocomplete=\"street-address\">{}</textarea>\
             <button type=\"submit\">Apply</button></form>",
            message(error, None),
            v(|n| Some(&n.given_name)),
            v(|n| Some(&n.family_name)),
            v(|n| Some(&n.birth_date)),
            v(|n| n.email.as_deref()),
            v(|n| n.phone.as_deref()),
            v(|n| Some(&n.address)),
        ),
    )
}

/// Pre-registration done.
pub(crate) fn applied(application: &Application) -> String {
    page(
        "Application received",
        "",
        &format!(
            "<h1>Application received</h1><p class=\"notice\">Your reference is \
             <strong id=\"reference\">{}</strong> and your national identity number is \
             <strong id=\"national-id\">{}</strong>.</p><p>Bring two identity documents to a \
             service centre. Nothing can be done with this number until your identity has been \
             verified there.</p>",
            escape(&application.reference),
            escape(&application.national_id)
        ),
    )
}
