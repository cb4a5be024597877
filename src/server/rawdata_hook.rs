//! Turns finished inbound requests into raw-data reports (only the operations the spec lists).

use std::sync::Arc;

use crate::config::Config;
use crate::inbound::{ObservedRequest, RequestObserver};
use crate::rawdata::{self, Direction, Invitee, Measurement, RawDataReport, Reporter};

pub(super) struct RawDataObserver {
    pub(super) config: Arc<Config>,
    pub(super) reporter: Reporter,
}

impl RequestObserver for RawDataObserver {
    fn observe(&self, obs: &ObservedRequest) {
        let invitee = match &obs.invitee_server {
            None => Invitee::None,
            Some(server) if *server == self.config.homeserver.server_name => Invitee::Local,
            Some(_) => Invitee::Remote,
        };
        let Some(operation) = rawdata::operation_for(
            Direction::Inbound,
            &obs.method,
            &obs.endpoint_template,
            invitee,
        ) else {
            return;
        };
        let measurement = Measurement {
            operation,
            start: obs.started,
            duration: obs.duration,
            status: obs.status,
            useragent: if obs.is_federation {
                None
            } else {
                obs.user_agent.as_deref()
            },
            size_in: obs.size_in.unwrap_or(0),
            size_out: obs.size_out.unwrap_or(0),
        };
        self.reporter
            .report(RawDataReport::build(&self.config, &measurement));
    }
}
