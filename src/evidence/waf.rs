//! The vocabulary of WAF and bot walls (attributes `waf.*`).
//!
//! A wall is an edge network's block or challenge page served in place of the API's answer, at
//! any status (403, but also 200, 202, 405, 429, 503). It is never retried, and the decision for
//! the call is `hold`: a human has to talk to the vendor, quoting [`WafVerdict::reference`].
//! The one exception is [`WafKind::RateLimit`], the edge's own rate limit: it passes by itself,
//! so it is waited out like a 429.

use std::fmt;

use super::str_enum;

str_enum! {
    /// The edge network or firewall product behind a wall (attribute `waf.vendor`).
    #[non_exhaustive]
    pub enum WafVendor {
        /// Cloudflare (WAF, bot management, challenge pages).
        Cloudflare => "cloudflare",
        /// AWS WAF, CloudFront, ALB.
        Aws => "aws",
        /// Akamai Kona / App & API Protector.
        Akamai => "akamai",
        /// Imperva / Incapsula.
        Imperva => "imperva",
        /// Sucuri CloudProxy.
        Sucuri => "sucuri",
        /// F5 BIG-IP ASM / Advanced WAF.
        F5 => "f5",
        /// Azure Application Gateway WAF.
        AzureApplicationGateway => "azure_application_gateway",
        /// Azure Front Door WAF.
        AzureFrontDoor => "azure_front_door",
        /// Google Cloud Armor.
        GoogleCloudArmor => "google_cloud_armor",
        /// ModSecurity.
        ModSecurity => "modsecurity",
        /// nginx's or OpenResty's default 403 page.
        Nginx => "nginx",
        /// Fastly.
        Fastly => "fastly",
        /// Vercel's security checkpoint.
        Vercel => "vercel",
        /// PerimeterX / HUMAN.
        PerimeterX => "perimeterx",
        /// Barracuda.
        Barracuda => "barracuda",
        /// Citrix NetScaler AppFirewall.
        NetScaler => "netscaler",
        /// Radware.
        Radware => "radware",
        /// Wordfence.
        Wordfence => "wordfence",
        /// StackPath.
        StackPath => "stackpath",
        /// DDoS-Guard.
        DdosGuard => "ddos_guard",
        /// Anubis proof-of-work challenge.
        Anubis => "anubis",
        /// DataDome bot protection (its CAPTCHA and block answers, HTML or JSON).
        DataDome => "datadome",
        /// A wall whose vendor could not be named.
        Unknown => "unknown",
    }
}

str_enum! {
    /// What kind of wall (attribute `waf.kind`).
    pub enum WafKind {
        /// A block page: the request will not pass.
        Block => "block",
        /// A challenge (JavaScript, CAPTCHA, proof of work) that a program cannot answer.
        Challenge => "challenge",
        /// An edge answered in place of the API (a non-JSON 403/406/429/503 from behind it, or
        /// its own error page) and no marker says a firewall rule did it: CloudFront's "The
        /// request could not be satisfied" for a method or country it was told to refuse, for one.
        Suspected => "suspected",
        /// The edge's own rate limit (Cloudflare's error 1015 on a 429, page or JSON), not a
        /// block: it lifts by itself, and the edge says when in `Retry-After` (Cloudflare sends
        /// 30 s for 1015 since 2026-03). Unlike the other kinds it is worth retrying after that
        /// wait, and it is decided as a 429 is.
        RateLimit => "rate_limit",
    }
}

/// A recognised wall: vendor, kind, and the reference to quote to support.
#[derive(Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct WafVerdict {
    /// Who served it.
    pub vendor: WafVendor,
    /// Block, challenge, suspected or rate limit.
    pub kind: WafKind,
    /// Cloudflare Ray ID, Akamai Reference #, F5 support ID, Imperva incident ID,
    /// `x-azure-ref`, CloudFront request id: whatever the vendor's support asks for. A Ray ID is
    /// the bare 16 hex digits (`8f2a1b3c4d5e6f70`), its data centre is in [`Self::location`].
    pub reference: Option<String>,
    /// Where the edge answered, when it says: the Cloudflare data centre that `cf-ray` ends with
    /// (`8f2a1b3c4d5e6f70-FRA` gives `FRA`).
    pub location: Option<String>,
}

impl WafVerdict {
    /// A verdict without a reference.
    pub fn new(vendor: WafVendor, kind: WafKind) -> Self {
        Self {
            vendor,
            kind,
            reference: None,
            location: None,
        }
    }

    /// The same verdict, carrying a reference.
    #[must_use]
    pub fn with_reference(mut self, reference: impl Into<String>) -> Self {
        self.reference = Some(reference.into());
        self
    }

    /// The same verdict, carrying where the edge answered.
    #[must_use]
    pub fn with_location(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }
}

impl fmt::Debug for WafVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WafVerdict")
            .field("vendor", &self.vendor.as_str())
            .field("kind", &self.kind.as_str())
            .field("reference", &self.reference)
            .field("location", &self.location)
            .finish()
    }
}
