//! The pages a citizen sees: login, consent, logout and errors. Server-rendered, no
//! scripts, no third-party assets; every text in English and Spanish (the language
//! comes from `ui_locales`, else `Accept-Language`).

/// A page language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lang {
    En,
    Es,
}

impl Lang {
    /// Picks from `ui_locales` (space-separated) or an `Accept-Language` header.
    pub(crate) fn pick(ui_locales: Option<&str>, accept_language: Option<&str>) -> Self {
        let candidates = ui_locales
            .map(|l| l.split(' ').map(str::to_owned).collect::<Vec<_>>())
            .or_else(|| {
                accept_language.map(|header| {
                    header
                        .split(',')
                        .map(|part| part.split(';').next().unwrap_or("").trim().to_owned())
                        .collect()
                })
            })
            .unwrap_or_default();
        for tag in candidates {
            let primary = tag.split('-').next().unwrap_or("").to_ascii_lowercase();
            match primary.as_str() {
                "en" => return Self::En,
                "es" => return Self::Es,
                _ => {}
            }
        }
        Self::En
    }

    fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Es => "es",
        }
    }
}

/// The texts, by key.
pub(crate) fn text(lang: Lang, key: &str) -> &'static str {
    match (lang, key) {
        (Lang::En, "login.title") => "Log in",
        (Lang::Es, "login.title") => "Iniciar sesión",
        (Lang::En, "login.intro") => "wants to know who you are. Choose how to prove it.",
        (Lang::Es, "login.intro") => "quiere saber quién es usted. Elija cómo demostrarlo.",
        (Lang::En, "login.card") => "Log in with your ID card",
        (Lang::Es, "login.card") => "Iniciar sesión con su cédula de identidad",
        (Lang::En, "login.card.help") => {
            "Put the card in the reader first. Your browser will ask which certificate to use and then for PIN1."
        }
        (Lang::Es, "login.card.help") => {
            "Inserte primero la tarjeta en el lector. El navegador le pedirá el certificado y luego el PIN1."
        }
        (Lang::En, "login.level") => "This service asks for assurance level",
        (Lang::Es, "login.level") => "Este servicio exige el nivel de garantía",
        (Lang::En, "login.cancel") => "Cancel and return to the service",
        (Lang::Es, "login.cancel") => "Cancelar y volver al servicio",
        (Lang::En, "consent.title") => "Share your details?",
        (Lang::Es, "consent.title") => "¿Compartir sus datos?",
        (Lang::En, "consent.intro") => "asks for the following:",
        (Lang::Es, "consent.intro") => "solicita lo siguiente:",
        (Lang::En, "consent.allow") => "Allow",
        (Lang::Es, "consent.allow") => "Permitir",
        (Lang::En, "consent.deny") => "Do not allow",
        (Lang::Es, "consent.deny") => "No permitir",
        (Lang::En, "consent.as") => "You are logged in as",
        (Lang::Es, "consent.as") => "Ha iniciado sesión como",
        (Lang::En, "consent.remember") => {
            "Your choice is remembered; you can withdraw it at any time in your account."
        }
        (Lang::Es, "consent.remember") => {
            "Su decisión se recuerda; puede retirarla en cualquier momento desde su cuenta."
        }
        (Lang::En, "scope.openid") => "Your identifier for this service",
        (Lang::Es, "scope.openid") => "Su identificador para este servicio",
        (Lang::En, "scope.profile") => "Your name",
        (Lang::Es, "scope.profile") => "Su nombre",
        (Lang::En, "scope.national_id") => "Your national identity number",
        (Lang::Es, "scope.national_id") => "Su número de identidad nacional",
        (Lang::En, "scope.contact") => "Your e-mail address and phone number",
        (Lang::Es, "scope.contact") => "Su correo electrónico y teléfono",
        (Lang::En, "scope.offline_access") => "Access while you are not logged in",
        (Lang::Es, "scope.offline_access") => "Acceso cuando usted no ha iniciado sesión",
        (Lang::En, "scope.service") => "List your signing certificates at the signing service",
        (Lang::Es, "scope.service") => {
            "Consultar sus certificados de firma en el servicio de firma"
        }
        (Lang::En, "scope.credential") => "Sign documents with your signing certificate",
        (Lang::Es, "scope.credential") => "Firmar documentos con su certificado de firma",
        (Lang::En, "consent.sign.title") => "Authorise a signature?",
        (Lang::Es, "consent.sign.title") => "¿Autorizar una firma?",
        (Lang::En, "consent.sign.intro") => {
            "If you allow it, the signing service will sign these documents in your name:"
        }
        (Lang::Es, "consent.sign.intro") => {
            "Si lo permite, el servicio de firma firmará estos documentos en su nombre:"
        }
        (Lang::En, "consent.sign.credential") => "Signing certificate",
        (Lang::Es, "consent.sign.credential") => "Certificado de firma",
        (Lang::En, "consent.sign.algorithm") => "Digest algorithm",
        (Lang::Es, "consent.sign.algorithm") => "Algoritmo de resumen",
        (Lang::En, "consent.sign.documents") => "Documents to be signed",
        (Lang::Es, "consent.sign.documents") => "Documentos que se firmarán",
        (Lang::En, "consent.sign.document") => "Document",
        (Lang::Es, "consent.sign.document") => "Documento",
        (Lang::En, "consent.sign.fingerprint") => "Fingerprint (start of the digest)",
        (Lang::Es, "consent.sign.fingerprint") => "Huella (inicio del resumen)",
        (Lang::En, "consent.sign.once") => {
            "This authorisation is for these documents only and is used once; every signature is asked for again."
        }
        (Lang::Es, "consent.sign.once") => {
            "Esta autorización vale solo para estos documentos y se usa una vez; cada firma se vuelve a solicitar."
        }
        (Lang::En, "error.title") => "Something went wrong",
        (Lang::Es, "error.title") => "Algo salió mal",
        (Lang::En, "error.back") => "Go back to the service you came from and start again.",
        (Lang::Es, "error.back") => "Vuelva al servicio del que venía y empiece de nuevo.",
        (Lang::En, "logout.title") => "Log out",
        (Lang::Es, "logout.title") => "Cerrar sesión",
        (Lang::En, "logout.confirm") => "Log out of every service that uses this login?",
        (Lang::Es, "logout.confirm") => {
            "¿Cerrar la sesión en todos los servicios que usan este acceso?"
        }
        (Lang::En, "logout.button") => "Log out",
        (Lang::Es, "logout.button") => "Cerrar sesión",
        (Lang::En, "logout.done") => "You are logged out.",
        (Lang::Es, "logout.done") => "Ha cerrado la sesión.",
        (Lang::En, "login.passkey") => "Log in with a passkey",
        (Lang::Es, "login.passkey") => "Iniciar sesión con una llave de acceso",
        (Lang::En, "login.passkey.id") => "Your national identity number",
        (Lang::Es, "login.passkey.id") => "Su número de identidad nacional",
        (Lang::En, "login.passkey.help") => {
            "A passkey reaches level substantial. Services that ask for level high need your ID card."
        }
        (Lang::Es, "login.passkey.help") => {
            "Una llave de acceso alcanza el nivel sustancial. Los servicios de nivel alto requieren su cédula."
        }
        (Lang::En, "account.title") => "Your eID account",
        (Lang::Es, "account.title") => "Su cuenta eID",
        (Lang::En, "account.login") => "Log in with your ID card to see your account",
        (Lang::Es, "account.login") => "Inicie sesión con su cédula para ver su cuenta",
        (Lang::En, "account.identity") => "Identity",
        (Lang::Es, "account.identity") => "Identidad",
        (Lang::En, "account.level") => "This session's assurance level",
        (Lang::Es, "account.level") => "Nivel de garantía de esta sesión",
        (Lang::En, "account.passkeys") => "Passkeys",
        (Lang::Es, "account.passkeys") => "Llaves de acceso",
        (Lang::En, "account.passkeys.none") => "You have no passkeys.",
        (Lang::Es, "account.passkeys.none") => "No tiene llaves de acceso.",
        (Lang::En, "account.passkeys.add") => "Add a passkey",
        (Lang::Es, "account.passkeys.add") => "Añadir una llave de acceso",
        (Lang::En, "account.passkeys.name") => "Name for the new passkey",
        (Lang::Es, "account.passkeys.name") => "Nombre de la nueva llave de acceso",
        (Lang::En, "account.passkeys.high") => {
            "To add a passkey, log in with your ID card (level high)."
        }
        (Lang::Es, "account.passkeys.high") => {
            "Para añadir una llave de acceso, inicie sesión con su cédula (nivel alto)."
        }
        (Lang::En, "account.remove") => "Remove",
        (Lang::Es, "account.remove") => "Eliminar",
        (Lang::En, "account.consents") => "Services you share details with",
        (Lang::Es, "account.consents") => "Servicios con los que comparte datos",
        (Lang::En, "account.consents.none") => {
            "You have not allowed any service to see your details."
        }
        (Lang::Es, "account.consents.none") => "No ha permitido a ningún servicio ver sus datos.",
        (Lang::En, "account.withdraw") => "Withdraw",
        (Lang::Es, "account.withdraw") => "Retirar",
        (Lang::En, "account.logins") => "Recent logins",
        (Lang::Es, "account.logins") => "Inicios de sesión recientes",
        (Lang::En, "method.idcard") => "ID card",
        (Lang::Es, "method.idcard") => "cédula de identidad",
        (Lang::En, "method.passkey") => "passkey",
        (Lang::Es, "method.passkey") => "llave de acceso",
        (Lang::En, "account.certificates") => "Your certificates",
        (Lang::Es, "account.certificates") => "Sus certificados",
        (Lang::En, "account.suspend") => "Suspend (card lost)",
        (Lang::Es, "account.suspend") => "Suspender (tarjeta perdida)",
        (Lang::En, "account.suspend.help") => {
            "A suspended certificate stops working at once. A service centre can lift the suspension."
        }
        (Lang::Es, "account.suspend.help") => {
            "Un certificado suspendido deja de funcionar de inmediato. Un centro de servicio puede levantar la suspensión."
        }
        (Lang::En, "login.mobile") => "Log in with mobile ID",
        (Lang::Es, "login.mobile") => "Iniciar sesión con identidad móvil",
        (Lang::En, "login.mobile.phone") => "Your phone number (+ and country code)",
        (Lang::Es, "login.mobile.phone") => "Su número de teléfono (+ y código de país)",
        (Lang::En, "login.mobile.help") => {
            "Your phone will ask you to confirm with PIN1. Mobile ID reaches level high."
        }
        (Lang::Es, "login.mobile.help") => {
            "Su teléfono le pedirá confirmar con el PIN1. La identidad móvil alcanza el nivel alto."
        }
        (Lang::En, "mobile.title") => "Confirm on your phone",
        (Lang::Es, "mobile.title") => "Confirme en su teléfono",
        (Lang::En, "mobile.code") => "Verification code",
        (Lang::Es, "mobile.code") => "Código de verificación",
        (Lang::En, "mobile.check") => {
            "Check that your phone shows the same code, then enter PIN1 there. If the code differs, cancel on the phone."
        }
        (Lang::Es, "mobile.check") => {
            "Compruebe que su teléfono muestra el mismo código y luego introduzca allí el PIN1. Si el código es distinto, cancele en el teléfono."
        }
        (Lang::En, "mobile.waiting") => "Waiting for your phone…",
        (Lang::Es, "mobile.waiting") => "Esperando a su teléfono…",
        (Lang::En, "mobile.continue") => "Continue once you have confirmed",
        (Lang::Es, "mobile.continue") => "Continuar cuando haya confirmado",
        (Lang::En, "mobile.retry") => "Try again",
        (Lang::Es, "mobile.retry") => "Intentar de nuevo",
        (Lang::En, "method.mobile-id") => "mobile ID",
        (Lang::Es, "method.mobile-id") => "identidad móvil",
        (Lang::En, "mobile.error.INVALID_INPUT") => {
            "Check the phone number (with + and the country code) and the national identity number."
        }
        (Lang::Es, "mobile.error.INVALID_INPUT") => {
            "Compruebe el número de teléfono (con + y el código de país) y el número de identidad nacional."
        }
        (Lang::En, "mobile.error.TOO_MANY") => {
            "Too many mobile-ID requests for this login. Go back to the service and start again."
        }
        (Lang::Es, "mobile.error.TOO_MANY") => {
            "Demasiadas solicitudes de identidad móvil para este acceso. Vuelva al servicio y empiece de nuevo."
        }
        (Lang::En, "mobile.error.TIMEOUT" | "mobile.error.EXPIRED") => {
            "You did not confirm on your phone in time. Please try again."
        }
        (Lang::Es, "mobile.error.TIMEOUT" | "mobile.error.EXPIRED") => {
            "No confirmó en su teléfono a tiempo. Inténtelo de nuevo."
        }
        (Lang::En, "mobile.error.NOT_MID_CLIENT") => {
            "This phone number and national identity number have no active mobile ID. Check both, or activate mobile ID at a service centre."
        }
        (Lang::Es, "mobile.error.NOT_MID_CLIENT") => {
            "Este teléfono y número de identidad no tienen identidad móvil activa. Compruebe ambos o actívela en un centro de servicio."
        }
        (Lang::En, "mobile.error.USER_CANCELLED") => "You cancelled on your phone.",
        (Lang::Es, "mobile.error.USER_CANCELLED") => "Canceló en su teléfono.",
        (Lang::En, "mobile.error.PHONE_ABSENT") => {
            "Your phone could not be reached. Make sure it is switched on and has signal, then try again."
        }
        (Lang::Es, "mobile.error.PHONE_ABSENT") => {
            "No se pudo contactar su teléfono. Compruebe que esté encendido y con señal e inténtelo de nuevo."
        }
        (Lang::En, "mobile.error.DELIVERY_ERROR") => {
            "The request could not be delivered to your phone. Please try again in a moment."
        }
        (Lang::Es, "mobile.error.DELIVERY_ERROR") => {
            "No se pudo entregar la solicitud a su teléfono. Inténtelo de nuevo en un momento."
        }
        (Lang::En, "mobile.error.SIM_ERROR") => {
            "Your SIM refused the request. If your PIN is blocked, unblock it with your PUK; otherwise contact your mobile operator."
        }
        (Lang::Es, "mobile.error.SIM_ERROR") => {
            "Su SIM rechazó la solicitud. Si su PIN está bloqueado, desbloquéelo con el PUK; si no, contacte a su operador."
        }
        (Lang::En, "mobile.error.REVOKED") => {
            "Your mobile ID certificate is revoked or suspended. Visit a service centre."
        }
        (Lang::Es, "mobile.error.REVOKED") => {
            "Su certificado de identidad móvil está revocado o suspendido. Acuda a un centro de servicio."
        }
        (
            Lang::En,
            "mobile.error.SIGNATURE_HASH_MISMATCH"
            | "mobile.error.BAD_SIGNATURE"
            | "mobile.error.CERTIFICATE"
            | "mobile.error.WRONG_PERSON",
        ) => {
            "Your phone's answer could not be accepted. Please try again; if it keeps happening, contact your mobile operator."
        }
        (
            Lang::Es,
            "mobile.error.SIGNATURE_HASH_MISMATCH"
            | "mobile.error.BAD_SIGNATURE"
            | "mobile.error.CERTIFICATE"
            | "mobile.error.WRONG_PERSON",
        ) => {
            "No se pudo aceptar la respuesta de su teléfono. Inténtelo de nuevo; si se repite, contacte a su operador."
        }
        (Lang::En, "mobile.error.UNAVAILABLE") => {
            "Mobile ID is not available at the moment. Please try again later or use another way to log in."
        }
        (Lang::Es, "mobile.error.UNAVAILABLE") => {
            "La identidad móvil no está disponible en este momento. Inténtelo más tarde o use otro medio."
        }
        (Lang::En, _) | (Lang::Es, _) => "",
    }
}

pub(crate) use eid_core::web::escape;

use crate::authorization_details::CredentialAuthorization;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;\
padding:0 1rem;color:#111;background:#fff;line-height:1.5}h1{font-size:1.6rem}\
a.button,button{display:inline-block;font-size:1.05rem;padding:.7rem 1.2rem;margin:.3rem 0;\
border:2px solid #0b3d91;border-radius:.3rem;background:#0b3d91;color:#fff;text-decoration:none;\
cursor:pointer}button.secondary,a.secondary{background:#fff;color:#0b3d91}\
a:focus,button:focus{outline:3px solid #f4a000;outline-offset:2px}.note{color:#333}\
.error{border-left:4px solid #b00020;padding-left:1rem}";

/// A whole page around `body` (already escaped where needed).
pub(crate) fn page(lang: Lang, title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        lang.code(),
        escape(title),
    )
}

/// What the citizen is told about a mobile-ID refusal with this code.
pub(crate) fn mobile_error(lang: Lang, code: &str) -> &'static str {
    match text(lang, &format!("mobile.error.{code}")) {
        "" => text(lang, "mobile.error.UNAVAILABLE"),
        message => message,
    }
}

/// The mobile-ID form of the login page.
pub(crate) struct MobileForm<'a> {
    /// Where it posts.
    pub(crate) action: &'a str,
    /// Its CSRF token.
    pub(crate) csrf: &'a str,
    /// A refusal code from the last try, to explain.
    pub(crate) error: Option<&'a str>,
}

fn mobile_form(lang: Lang, form: &MobileForm<'_>) -> String {
    let t = |k| text(lang, k);
    let error = form
        .error
        .map(|code| {
            format!(
                "<p class=\"error\" role=\"alert\" id=\"mobile-error\">{}</p>",
                escape(mobile_error(lang, code))
            )
        })
        .unwrap_or_default();
    format!(
        "<h2>{}</h2>{error}<form method=\"post\" action=\"{}\" id=\"mobile-form\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <p><label for=\"mobile-phone\">{}</label><br><input id=\"mobile-phone\" \
         name=\"phone_number\" type=\"tel\" autocomplete=\"tel\" required></p>\
         <p><label for=\"mobile-national-id\">{}</label><br><input id=\"mobile-national-id\" \
         name=\"national_id\" inputmode=\"numeric\" required></p>\
         <p><button type=\"submit\" id=\"mobile-id\">{}</button></p><p class=\"note\">{}</p></form>",
        escape(t("login.mobile")),
        escape(form.action),
        escape(form.csrf),
        escape(t("login.mobile.phone")),
        escape(t("login.passkey.id")),
        escape(t("login.mobile")),
        escape(t("login.mobile.help")),
    )
}

/// The page shown while the citizen confirms a mobile-ID login on the phone: the
/// verification code, and a script that waits for the answer at `status_url` (without
/// scripts, a link to `continue_url` does the waiting).
pub(crate) fn mobile_wait(
    lang: Lang,
    code: &str,
    status_url: &str,
    continue_url: &str,
    cancel_url: &str,
) -> String {
    let t = |k| text(lang, k);
    page(
        lang,
        t("mobile.title"),
        &format!(
            "<h1>{}</h1><p>{}: <strong id=\"verification-code\" style=\"font-size:2rem\">{}</strong></p>\
             <p>{}</p><p id=\"mobile-status\" role=\"status\" data-status=\"{}\">{}</p>\
             <p class=\"error\" role=\"alert\" id=\"mobile-error\" hidden></p>\
             <p><a class=\"button\" id=\"mobile-continue\" href=\"{}\" data-retry=\"{}\">{}</a></p>\
             <p><a class=\"button secondary\" id=\"cancel\" href=\"{}\">{}</a></p>\
             <script src=\"/static/mobile-id.js\"></script>",
            escape(t("mobile.title")),
            escape(t("mobile.code")),
            escape(code),
            escape(t("mobile.check")),
            escape(status_url),
            escape(t("mobile.waiting")),
            escape(continue_url),
            escape(t("mobile.retry")),
            escape(t("mobile.continue")),
            escape(cancel_url),
            escape(t("login.cancel")),
        ),
    )
}

/// The login page: the methods that reach the level asked for. `passkey` carries the
/// passkey endpoints (start, finish) when a passkey is good enough; `mobile` the
/// mobile-ID form when mobile ID is on.
pub(crate) fn login(
    lang: Lang,
    client_name: &str,
    level: &str,
    card_url: &str,
    cancel_url: &str,
    passkey: Option<(&str, &str)>,
    mobile: Option<&MobileForm<'_>>,
) -> String {
    let t = |k| text(lang, k);
    let mobile = mobile.map(|f| mobile_form(lang, f)).unwrap_or_default();
    let passkey = passkey
        .map(|(start, finish)| {
            format!(
                "<h2>{}</h2><form id=\"passkey-form\" data-start=\"{}\" data-finish=\"{}\">\
                 <p><label for=\"national-id\">{}</label><br><input id=\"national-id\" \
                 name=\"national_id\" inputmode=\"numeric\" autocomplete=\"username webauthn\" \
                 required></p><p><button type=\"submit\" id=\"passkey\">{}</button></p>\
                 <p class=\"note\">{}</p><p class=\"error\" role=\"alert\" id=\"passkey-error\" \
                 hidden></p></form><script src=\"/static/passkey.js\"></script>",
                escape(t("login.passkey")),
                escape(start),
                escape(finish),
                escape(t("login.passkey.id")),
                escape(t("login.passkey")),
                escape(t("login.passkey.help")),
            )
        })
        .unwrap_or_default();
    page(
        lang,
        t("login.title"),
        &format!(
            "<h1>{}</h1><p><strong>{}</strong> {}</p><p class=\"note\">{} <strong>{}</strong>.</p>\
             <p><a class=\"button\" id=\"idcard\" href=\"{}\">{}</a></p><p class=\"note\">{}</p>\
             {mobile}{passkey}<p><a class=\"button secondary\" id=\"cancel\" href=\"{}\">{}</a></p>",
            escape(t("login.title")),
            escape(client_name),
            escape(t("login.intro")),
            escape(t("login.level")),
            escape(level),
            escape(card_url),
            escape(t("login.card")),
            escape(t("login.card.help")),
            escape(cancel_url),
            escape(t("login.cancel")),
        ),
    )
}

/// What a signing authorisation asks for: the credential, the algorithm, and each
/// document by its label (or its number) with the start of its digest in hex.
fn signing_section(lang: Lang, credential: &CredentialAuthorization) -> String {
    let t = |k| text(lang, k);
    let rows: String = credential
        .document_digests
        .iter()
        .enumerate()
        .map(|(n, digest)| {
            let label = match &digest.label {
                Some(label) => label.clone(),
                None => format!("{} {}", t("consent.sign.document"), n + 1),
            };
            format!(
                "<tr><td>{}</td><td><code>{}</code></td></tr>",
                escape(&label),
                escape(&fingerprint(&digest.hash)),
            )
        })
        .collect();
    format!(
        "<section id=\"signing\" aria-labelledby=\"signing-heading\">\
         <h2 id=\"signing-heading\">{}</h2><p>{}</p>\
         <dl><dt>{}</dt><dd id=\"credential-id\">{}</dd>\
         <dt>{}</dt><dd id=\"hash-algorithm\">{}</dd></dl>\
         <table id=\"documents\" aria-labelledby=\"signing-heading\"><thead><tr>\
         <th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr></thead>\
         <tbody>{rows}</tbody></table><p class=\"note\" id=\"sign-once\">{}</p></section>",
        escape(t("consent.sign.documents")),
        escape(t("consent.sign.intro")),
        escape(t("consent.sign.credential")),
        escape(&credential.credential_id),
        escape(t("consent.sign.algorithm")),
        escape(credential.algorithm().map_or("", |a| a.name())),
        escape(t("consent.sign.document")),
        escape(t("consent.sign.fingerprint")),
        escape(t("consent.sign.once")),
    )
}

/// The first eight bytes of a (standard base64) digest in hex, in groups of four
/// characters, so a citizen can compare it with what their signing application shows.
pub(crate) fn fingerprint(hash: &str) -> String {
    use base64ct::{Base64, Encoding};
    let Ok(bytes) = Base64::decode_vec(hash) else {
        return String::new();
    };
    let hex = crate::clients::hex_lower(bytes.get(..8).unwrap_or(&bytes));
    let groups: Vec<&str> = hex
        .as_bytes()
        .chunks(4)
        .filter_map(|chunk| std::str::from_utf8(chunk).ok())
        .collect();
    format!("{}…", groups.join(" "))
}

/// The consent page for `scopes` and, when asked for, a signing authorisation.
pub(crate) fn consent(
    lang: Lang,
    client_name: &str,
    citizen_name: &str,
    scopes: &[String],
    credential: Option<&CredentialAuthorization>,
    action: &str,
    csrf: &str,
) -> String {
    let t = |k| text(lang, k);
    let title = if credential.is_some() {
        t("consent.sign.title")
    } else {
        t("consent.title")
    };
    let signing = credential
        .map(|credential| signing_section(lang, credential))
        .unwrap_or_default();
    let items: String = scopes
        .iter()
        .map(|s| {
            let label = text(lang, &format!("scope.{s}"));
            format!(
                "<li>{}</li>",
                escape(if label.is_empty() { s } else { label })
            )
        })
        .collect();
    page(
        lang,
        title,
        &format!(
            "<h1>{}</h1><p>{} <strong>{}</strong>.</p><p><strong>{}</strong> {}</p><ul>{items}</ul>\
             {signing}<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\" name=\"decision\" value=\"allow\" id=\"allow\">{}</button> \
             <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\" class=\"secondary\">{}</button>\
             </form><p class=\"note\">{}</p>",
            escape(title),
            escape(t("consent.as")),
            escape(citizen_name),
            escape(client_name),
            escape(t("consent.intro")),
            escape(action),
            escape(csrf),
            escape(t("consent.allow")),
            escape(t("consent.deny")),
            escape(t("consent.remember")),
        ),
    )
}

/// An error shown at the provider (never redirected).
pub(crate) fn error(lang: Lang, message: &str) -> String {
    let t = |k| text(lang, k);
    page(
        lang,
        t("error.title"),
        &format!(
            "<h1>{}</h1><p class=\"error\" role=\"alert\" id=\"message\">{}</p><p>{}</p>",
            escape(t("error.title")),
            escape(message),
            escape(t("error.back")),
        ),
    )
}

/// What the self-service page shows.
pub(crate) struct Account<'a> {
    pub(crate) name: &'a str,
    pub(crate) national_id: &'a str,
    pub(crate) level: &'a str,
    pub(crate) high: bool,
    /// (credential id, name, added) of each passkey.
    pub(crate) passkeys: Vec<(String, String, String)>,
    /// (client id, client name, scopes) of each consent.
    pub(crate) consents: Vec<(String, String, String)>,
    pub(crate) csrf: &'a str,
    pub(crate) passkeys_available: bool,
    /// (when, method, level) of recent logins, newest first.
    pub(crate) logins: Vec<(String, String, String)>,
    /// (serial, profile, valid until, status) of the citizen's certificates, if the
    /// provider can see them.
    pub(crate) certificates: Option<Vec<(String, String, String, String)>>,
}

fn inline_form(action: &str, csrf: &str, field: &str, value: &str, label: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\" style=\"display:inline\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"{}\" \
         value=\"{}\"><button type=\"submit\" class=\"secondary\">{}</button></form>",
        escape(action),
        escape(csrf),
        escape(field),
        escape(value),
        escape(label)
    )
}

/// The self-service page of a logged-in citizen.
pub(crate) fn account(lang: Lang, account: &Account<'_>) -> String {
    let t = |k| text(lang, k);
    let passkeys = if account.passkeys.is_empty() {
        format!(
            "<p id=\"no-passkeys\">{}</p>",
            escape(t("account.passkeys.none"))
        )
    } else {
        let items: String = account
            .passkeys
            .iter()
            .map(|(id, name, added)| {
                format!(
                    "<li class=\"passkey\">{} <span class=\"note\">({})</span> {}</li>",
                    escape(name),
                    escape(added),
                    inline_form(
                        "/account/passkeys/remove",
                        account.csrf,
                        "credential_id",
                        id,
                        t("account.remove")
                    ),
                )
            })
            .collect();
        format!("<ul id=\"passkeys\">{items}</ul>")
    };
    let add = match (account.passkeys_available, account.high) {
        (false, _) => String::new(),
        (true, true) => format!(
            "<p><label for=\"passkey-name\">{}</label><br><input id=\"passkey-name\" \
             value=\"Passkey\"></p><p><button type=\"button\" id=\"add-passkey\" \
             data-start=\"/account/passkeys/start\" data-finish=\"/account/passkeys/finish\" \
             data-csrf=\"{}\">{}</button></p><p class=\"error\" role=\"alert\" \
             id=\"passkey-error\" hidden></p><script src=\"/static/passkey.js\"></script>",
            escape(t("account.passkeys.name")),
            escape(account.csrf),
            escape(t("account.passkeys.add")),
        ),
        (true, false) => format!(
            "<p class=\"note\">{}</p>",
            escape(t("account.passkeys.high"))
        ),
    };
    let consents = if account.consents.is_empty() {
        format!("<p>{}</p>", escape(t("account.consents.none")))
    } else {
        let items: String = account
            .consents
            .iter()
            .map(|(id, name, scopes)| {
                format!(
                    "<li class=\"consent\">{} <span class=\"note\">({})</span> {}</li>",
                    escape(name),
                    escape(scopes),
                    inline_form(
                        "/account/consents/withdraw",
                        account.csrf,
                        "client_id",
                        id,
                        t("account.withdraw")
                    ),
                )
            })
            .collect();
        format!("<ul id=\"consents\">{items}</ul>")
    };
    let logins: String = account
        .logins
        .iter()
        .map(|(at, method, level)| {
            let label = text(lang, &format!("method.{method}"));
            format!(
                "<li class=\"login\">{} <span class=\"note\">{}, {}</span></li>",
                escape(at),
                escape(if label.is_empty() { method } else { label }),
                escape(level),
            )
        })
        .collect();
    let certificates = account
        .certificates
        .as_ref()
        .map(|list| {
            let items: String = list
                .iter()
                .map(|(serial, profile, until, status)| {
                    let action = if status == "active" {
                        inline_form(
                            "/account/certificates/suspend",
                            account.csrf,
                            "serial",
                            serial,
                            t("account.suspend"),
                        )
                    } else {
                        String::new()
                    };
                    format!(
                        "<li class=\"certificate\" data-serial=\"{}\">{} <span class=\"note\">\
                         {} &middot; {} &middot; <span class=\"status\">{}</span></span> {action}</li>",
                        escape(serial),
                        escape(profile),
                        escape(serial),
                        escape(until),
                        escape(status),
                    )
                })
                .collect();
            format!(
                "<h2>{}</h2><ul id=\"certificates\">{items}</ul><p class=\"note\">{}</p>",
                escape(t("account.certificates")),
                escape(t("account.suspend.help")),
            )
        })
        .unwrap_or_default();
    page(
        lang,
        t("account.title"),
        &format!(
            "<h1>{}</h1><h2>{}</h2><p id=\"identity\"><strong>{}</strong><br>{}</p>\
             <p>{}: <strong id=\"level\">{}</strong></p>{certificates}<h2>{}</h2>{passkeys}{add}<h2>{}</h2>\
             {consents}<h2>{}</h2><ul id=\"logins\">{logins}</ul>\
             <p><a class=\"button secondary\" id=\"logout\" href=\"/logout\">{}</a></p>",
            escape(t("account.title")),
            escape(t("account.identity")),
            escape(account.name),
            escape(account.national_id),
            escape(t("account.level")),
            escape(account.level),
            escape(t("account.passkeys")),
            escape(t("account.consents")),
            escape(t("account.logins")),
            escape(t("logout.button")),
        ),
    )
}

/// The page for a visitor of /account without a session.
pub(crate) fn account_login(lang: Lang) -> String {
    let t = |k| text(lang, k);
    page(
        lang,
        t("account.title"),
        &format!(
            "<h1>{}</h1><p><a class=\"button\" id=\"account-login\" href=\"/account/login\">{}</a></p>",
            escape(t("account.title")),
            escape(t("account.login")),
        ),
    )
}

/// The logout confirmation, or the logged-out notice.
pub(crate) fn logout(lang: Lang, form: Option<(&str, &str)>) -> String {
    let t = |k| text(lang, k);
    let body = match form {
        Some((action, hidden)) => format!(
            "<h1>{}</h1><p>{}</p><form method=\"post\" action=\"{}\">{hidden}\
             <button type=\"submit\" id=\"logout\">{}</button></form>",
            escape(t("logout.title")),
            escape(t("logout.confirm")),
            escape(action),
            escape(t("logout.button")),
        ),
        None => format!(
            "<h1>{}</h1><p id=\"message\">{}</p>",
            escape(t("logout.title")),
            escape(t("logout.done"))
        ),
    };
    page(lang, t("logout.title"), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_follows_ui_locales_then_accept_language() {
        assert_eq!(Lang::pick(Some("es-TT en"), Some("en")), Lang::Es);
        assert_eq!(Lang::pick(None, Some("fr;q=1, es;q=0.8")), Lang::Es);
        assert_eq!(Lang::pick(None, None), Lang::En);
    }

    #[test]
    fn every_english_text_has_a_spanish_one() {
        for key in [
            "login.title",
            "login.intro",
            "login.card",
            "login.card.help",
            "login.level",
            "login.cancel",
            "consent.title",
            "consent.intro",
            "consent.allow",
            "consent.deny",
            "consent.as",
            "login.passkey",
            "login.passkey.id",
            "login.passkey.help",
            "account.title",
            "account.login",
            "account.identity",
            "account.level",
            "account.passkeys",
            "account.passkeys.none",
            "account.passkeys.add",
            "account.passkeys.name",
            "account.passkeys.high",
            "account.remove",
            "account.consents",
            "account.consents.none",
            "account.withdraw",
            "account.logins",
            "method.idcard",
            "method.passkey",
            "account.certificates",
            "account.suspend",
            "account.suspend.help",
            "consent.remember",
            "scope.openid",
            "scope.profile",
            "scope.national_id",
            "scope.contact",
            "scope.offline_access",
            "scope.service",
            "scope.credential",
            "consent.sign.title",
            "consent.sign.intro",
            "consent.sign.credential",
            "consent.sign.algorithm",
            "consent.sign.documents",
            "consent.sign.document",
            "consent.sign.fingerprint",
            "consent.sign.once",
            "error.title",
            "error.back",
            "logout.title",
            "logout.confirm",
            "logout.button",
            "logout.done",
        ] {
            assert!(!text(Lang::En, key).is_empty(), "{key}");
            assert!(!text(Lang::Es, key).is_empty(), "{key}");
        }
    }

    #[test]
    fn the_consent_page_shows_what_will_be_signed() {
        use crate::authorization_details::{CredentialAuthorization, DocumentDigest};
        use base64ct::{Base64, Encoding};
        let mut digest = [0u8; 32];
        digest[..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x01, 0x23, 0x45, 0x67]);
        let credential = CredentialAuthorization {
            credential_id: "cred-<1>".into(),
            document_digests: vec![
                DocumentDigest {
                    hash: Base64::encode_string(&digest),
                    label: Some("Deed & lease".into()),
                },
                DocumentDigest {
                    hash: Base64::encode_string(&[0; 32]),
                    label: None,
                },
            ],
            hash_algorithm_oid: "2.16.840.1.101.3.4.2.1".into(),
            locations: Vec::new(),
        };
        let scopes = ["openid".to_owned(), "credential".to_owned()];
        let page = consent(
            Lang::Es,
            "Notaría",
            "Mary Seacole",
            &scopes,
            Some(&credential),
            "/c",
            "t",
        );
        assert!(page.contains("¿Autorizar una firma?"), "{page}");
        assert!(page.contains("cred-&lt;1&gt;"), "{page}");
        assert!(page.contains("Deed &amp; lease"), "{page}");
        assert!(page.contains("Documento 2"), "{page}");
        assert!(page.contains("dead beef 0123 4567…"), "{page}");
        assert!(page.contains("SHA-256"), "{page}");
        let plain = consent(Lang::En, "Notary", "Mary Seacole", &scopes, None, "/c", "t");
        assert!(!plain.contains("id=\"signing\""));
    }

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
