//! The SIMs the simulator answers for, and the PIN tries it counts (in the database).

use eid_core::{AuditEvent, DbError, Outcome, ServiceContext, audit};
use eid_hsm::{
    CITIZEN_AUTHENTICATION_LABEL, CITIZEN_SIGNING_LABEL, CardId, CardReader, PinKind,
    mobile::protocol::{check_national_identity_number, check_phone_number},
};
use sqlx::Row;

use crate::{SimGatewayError, TRIES};

/// A registered SIM.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Sim {
    /// The phone number, `+` and country code.
    pub phone_number: String,
    /// The national identity number of its holder.
    pub national_id: String,
    /// The card (token pair) that is the SIM.
    pub card_id: String,
    /// Wrong PIN1 tries since the last right one.
    pub pin1_failures: i64,
    /// Wrong PIN2 tries since the last right one.
    pub pin2_failures: i64,
    /// Wrong PUK tries since the last right one.
    pub puk_failures: i64,
}

impl Sim {
    /// Wrong tries of `kind` so far.
    pub fn failures(&self, kind: PinKind) -> i64 {
        match kind {
            PinKind::Pin1 => self.pin1_failures,
            PinKind::Pin2 => self.pin2_failures,
            _ => self.puk_failures,
        }
    }

    /// Whether `kind` is blocked (three wrong tries).
    pub fn blocked(&self, kind: PinKind) -> bool {
        self.failures(kind) >= TRIES
    }
}

fn column(kind: PinKind) -> &'static str {
    match kind {
        PinKind::Pin1 => "pin1_failures",
        PinKind::Pin2 => "pin2_failures",
        _ => "puk_failures",
    }
}

/// Checks that a card is in the module with both key pairs a SIM needs.
pub(crate) fn check_card(reader: &CardReader, card: &CardId) -> Result<(), SimGatewayError> {
    let info = reader.card(card)?;
    for (token, key) in [
        (&info.pin1, CITIZEN_AUTHENTICATION_LABEL),
        (&info.pin2, CITIZEN_SIGNING_LABEL),
    ] {
        if !token.keys.iter().any(|k| k == key) {
            return Err(SimGatewayError::Conflict(format!(
                "card {card} is not a SIM with keys: '{}' has no key {key} ({})",
                token.label,
                info.contents()
            )));
        }
    }
    Ok(())
}

/// The registry table.
#[derive(Clone, Debug)]
pub struct SimRegistry {
    ctx: ServiceContext,
}

impl SimRegistry {
    pub(crate) fn new(ctx: ServiceContext) -> Self {
        Self { ctx }
    }

    /// Registers a SIM (the card is checked by the caller).
    pub async fn add(
        &self,
        phone_number: &str,
        national_id: &str,
        card: &CardId,
        actor: &str,
    ) -> Result<Sim, SimGatewayError> {
        let bad = |e: eid_hsm::mobile::protocol::ProtocolError| {
            SimGatewayError::BadRequest(e.to_string())
        };
        check_phone_number(phone_number).map_err(bad)?;
        check_national_identity_number(national_id).map_err(bad)?;
        if self.find(phone_number).await?.is_some() {
            return Err(SimGatewayError::Conflict(format!(
                "phone number {phone_number} already has a SIM"
            )));
        }
        if self.find_card(card.as_str()).await?.is_some() {
            return Err(SimGatewayError::Conflict(format!(
                "card {card} is already the SIM of another phone number"
            )));
        }
        let mut tx = self.ctx.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO sim_gateway_sim (phone_number, national_id, card_id, pin1_failures, \
             pin2_failures, puk_failures, created_at) VALUES ($1, $2, $3, 0, 0, 0, $4)",
        )
        .bind(phone_number)
        .bind(national_id)
        .bind(card.as_str())
        .bind(self.ctx.clock.now().unix_timestamp())
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("registering a SIM"))?;
        audit::append(
            &mut tx,
            self.ctx.clock.as_ref(),
            &AuditEvent::new(actor, "sim_gateway.sim.add", "sim", phone_number)
                .details(serde_json::json!({ "card": card.as_str(), "national_id": national_id })),
        )
        .await?;
        tx.commit()
            .await
            .map_err(DbError::query("registering a SIM"))?;
        Ok(Sim {
            phone_number: phone_number.to_owned(),
            national_id: national_id.to_owned(),
            card_id: card.to_string(),
            pin1_failures: 0,
            pin2_failures: 0,
            puk_failures: 0,
        })
    }

    async fn one(&self, filter: &'static str, value: &str) -> Result<Option<Sim>, SimGatewayError> {
        let sql = format!(
            "SELECT phone_number, national_id, card_id, pin1_failures, pin2_failures, \
             puk_failures FROM sim_gateway_sim WHERE {filter} = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .fetch_optional(self.ctx.db.pool())
            .await
            .map_err(DbError::query("reading a SIM"))?;
        row.map(|row| -> Result<Sim, sqlx::Error> {
            Ok(Sim {
                phone_number: row.try_get(0)?,
                national_id: row.try_get(1)?,
                card_id: row.try_get(2)?,
                pin1_failures: row.try_get(3)?,
                pin2_failures: row.try_get(4)?,
                puk_failures: row.try_get(5)?,
            })
        })
        .transpose()
        .map_err(|e| SimGatewayError::Db(DbError::query("reading a SIM")(e)))
    }

    /// The SIM of a phone number.
    pub async fn find(&self, phone_number: &str) -> Result<Option<Sim>, SimGatewayError> {
        self.one("phone_number", phone_number).await
    }

    async fn find_card(&self, card: &str) -> Result<Option<Sim>, SimGatewayError> {
        self.one("card_id", card).await
    }

    /// Counts a wrong `kind`; records it, and the block when it is the third.
    /// Returns the SIM as it is now.
    pub(crate) async fn wrong(
        &self,
        phone_number: &str,
        kind: PinKind,
    ) -> Result<Sim, SimGatewayError> {
        let column = column(kind);
        let mut tx = self.ctx.db.begin_write().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE sim_gateway_sim SET {column} = {column} + 1 WHERE phone_number = $1"
        )))
        .bind(phone_number)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("counting a wrong PIN"))?;
        let failures: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {column} FROM sim_gateway_sim WHERE phone_number = $1"
        )))
        .bind(phone_number)
        .fetch_one(&mut *tx)
        .await
        .map_err(DbError::query("counting a wrong PIN"))?;
        let mut events = vec![
            AuditEvent::new("phone", "sim_gateway.pin.wrong", "sim", phone_number)
                .outcome(Outcome::Denied)
                .details(serde_json::json!({ "pin": kind.to_string(), "failures": failures })),
        ];
        if failures == TRIES {
            events.push(
                AuditEvent::new("phone", "sim_gateway.pin.block", "sim", phone_number)
                    .details(serde_json::json!({ "pin": kind.to_string() })),
            );
        }
        audit::append_all(&mut tx, self.ctx.clock.as_ref(), &events).await?;
        tx.commit()
            .await
            .map_err(DbError::query("counting a wrong PIN"))?;
        self.find(phone_number)
            .await?
            .ok_or_else(|| SimGatewayError::NotFound(format!("no SIM for {phone_number}")))
    }

    /// Forgets the wrong tries of `kinds` after a right one; an unblock (`unblocked`
    /// is the PIN the PUK set again) is recorded.
    pub(crate) async fn right(
        &self,
        phone_number: &str,
        kinds: &[PinKind],
        unblocked: Option<PinKind>,
    ) -> Result<(), SimGatewayError> {
        let mut tx = self.ctx.db.begin_write().await?;
        for kind in kinds {
            let column = column(*kind);
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE sim_gateway_sim SET {column} = 0 WHERE phone_number = $1"
            )))
            .bind(phone_number)
            .execute(&mut *tx)
            .await
            .map_err(DbError::query("resetting PIN tries"))?;
        }
        if let Some(kind) = unblocked {
            audit::append(
                &mut tx,
                self.ctx.clock.as_ref(),
                &AuditEvent::new("phone", "sim_gateway.pin.unblock", "sim", phone_number)
                    .details(serde_json::json!({ "pin": kind.to_string() })),
            )
            .await?;
        }
        tx.commit()
            .await
            .map_err(DbError::query("resetting PIN tries"))?;
        Ok(())
    }
}
