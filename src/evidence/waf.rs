//! The vocabulary of WAF and bot walls (attributes `waf.*`).
//!
//! A wall is an edge network's block or challenge page served in place of the API's answer, at
//! any status (403, but also 200, 202, 405, 429, 503). It is never retried, and the decision for
//! the call is `hold`: a human has to talk to the vendor, quoting [`WafVerdict::reference`].

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
        /// A non-JSON 403/406/429/503 from behind an edge that left no block marker.
        Suspected => "suspected",
    }
}

/// A recognised wall: vendor, kind, and the reference to quote to support.
#[derive(Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct WafVerdict {
    /// Who served it.
    pub vendor: WafVendor,
    /// Block, challenge or suspected.
    pub kind: WafKind,
    /// Cloudflare Ray ID, Akamai Reference #, F5 support ID, Imperva incident ID,
    /// `x-azure-ref`, CloudFront request id: whatever the vendor's support asks for.
    pub reference: Option<String>,
}

impl WafVerdict {
    /// A verdict without a reference.
    pub fn new(vendor: WafVendor, kind: WafKind) -> Self {
        Self {
            vendor,
            kind,
            reference: None,
        }
    }

    /// The same verdict, carrying a reference.
    #[must_use]
    pub fn with_reference(mut self, reference: impl Into<String>) -> Self {
        self.reference = Some(reference.into());
        self
    }
}

impl fmt::Debug for WafVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WafVerdict")
            .field("vendor", &self.vendor.as_str())
            .field("kind", &self.kind.as_str())
            .field("reference", &self.reference)
            .finish()
    }
}
