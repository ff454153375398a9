//! EC2's Query protocol: DescribeInstances with filters and paging, XML answers in the
//! 2016-11-15 namespace.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::catalog::glob_match;
use crate::clock::{to_datetime, Millis};
use crate::error::ApiError;
use crate::fleet::Instance;
use crate::paging;
use crate::world::World;
use crate::xml::escape;

pub const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// EC2 actions the simulator answers.
pub const ACTIONS: [&str; 1] = ["DescribeInstances"];

const FILTER_NAMES: [&str; 9] = [
    "tag-key",
    "tag-value",
    "instance-state-name",
    "instance-id",
    "platform-details",
    "platform",
    "instance-type",
    "availability-zone",
    "private-ip-address",
];

/// The XML error document EC2 sends (note `RequestID`, not `requestId`).
pub fn error_xml(error: &ApiError, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
        escape(&error.code),
        escape(&error.message),
        escape(request_id)
    )
}

fn iso(ms: Millis) -> String {
    to_datetime(ms).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn hex17(seed: &str, salt: &str) -> String {
    crate::baseline::stable_hex17(&format!("{salt}/{seed}"))
}

/// `i-` followed by 8 or 17 hex digits.
fn is_ec2_instance_id(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|rest| {
        (rest.len() == 8 || rest.len() == 17) && rest.chars().all(|c| c.is_ascii_hexdigit())
    })
}

struct Query {
    instance_ids: Vec<String>,
    filters: Vec<(String, Vec<String>)>,
    max_results: Option<i64>,
    next_token: Option<String>,
    dry_run: bool,
}

/// Collects `Prefix.N` (and `Prefix.N.Sub.M`) parameters in numeric order.
fn numbered(params: &[(String, String)], prefix: &str) -> BTreeMap<u32, Vec<(String, String)>> {
    let mut groups: BTreeMap<u32, Vec<(String, String)>> = BTreeMap::new();
    for (key, value) in params {
        let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else { continue };
        let (number, tail) = rest.split_once('.').unwrap_or((rest, ""));
        if let Ok(n) = number.parse::<u32>() {
            groups.entry(n).or_default().push((tail.to_string(), value.clone()));
        }
    }
    groups
}

fn parse_query(params: &[(String, String)]) -> Result<Query, ApiError> {
    let single = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let instance_ids = numbered(params, "InstanceId")
        .into_values()
        .filter_map(|entries| entries.into_iter().find(|(tail, _)| tail.is_empty()).map(|(_, v)| v))
        .collect();
    let mut filters = Vec::new();
    for entries in numbered(params, "Filter").into_values() {
        let name =
            entries.iter().find(|(tail, _)| tail == "Name").map(|(_, v)| v.clone()).unwrap_or_default();
        let mut values: Vec<(u32, String)> = entries
            .iter()
            .filter_map(|(tail, v)| {
                tail.strip_prefix("Value.").and_then(|n| n.parse().ok()).map(|n| (n, v.clone()))
            })
            .collect();
        values.sort();
        filters.push((name, values.into_iter().map(|(_, v)| v).collect()));
    }
    let max_results = match single("MaxResults") {
        None => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            ApiError::new(
                "InvalidParameterValue",
                format!("Value ({text}) for parameter maxResults is invalid."),
            )
        })?),
    };
    Ok(Query {
        instance_ids,
        filters,
        max_results,
        next_token: single("NextToken").filter(|t| !t.is_empty()),
        dry_run: single("DryRun").is_some_and(|v| v.eq_ignore_ascii_case("true")),
    })
}

fn filter_matches(instance: &Instance, region: &str, name: &str, values: &[String]) -> bool {
    let any = |actual: &str| values.iter().any(|pattern| glob_match(pattern, actual));
    match name {
        "tag-key" => instance.tags.iter().any(|(k, _)| any(k)),
        "tag-value" => instance.tags.iter().any(|(_, v)| any(v)),
        "instance-state-name" => any(if instance.running { "running" } else { "stopped" }),
        "instance-id" => any(&instance.id),
        "platform-details" => any(instance.platform.platform_details()),
        "platform" => instance.platform.is_windows() && any("windows"),
        "instance-type" => any(instance.instance_type),
        "availability-zone" => any(&format!("{region}{}", instance.availability_zone)),
        "private-ip-address" => any(&instance.private_ip()),
        _ => match name.strip_prefix("tag:") {
            Some(key) => instance.tag(key).is_some_and(any),
            None => false,
        },
    }
}

impl World {
    /// Answers one EC2 action with its XML body.
    pub(crate) fn ec2(
        &mut self,
        action: &str,
        params: &[(String, String)],
        request_id: &str,
    ) -> Result<String, ApiError> {
        match action {
            "DescribeInstances" => self.describe_instances(params, request_id),
            other => Err(ApiError::new(
                "InvalidAction",
                format!("The action {other} is not valid for this web service."),
            )),
        }
    }

    fn describe_instances(
        &mut self,
        params: &[(String, String)],
        request_id: &str,
    ) -> Result<String, ApiError> {
        let query = parse_query(params)?;
        if query.dry_run {
            return Err(ApiError::new(
                "DryRunOperation",
                "Request would have succeeded, but DryRun flag is set.",
            )
            .with_status(412));
        }
        if !query.instance_ids.is_empty() && query.max_results.is_some() {
            return Err(ApiError::new(
                "InvalidParameterCombination",
                "The parameter instancesSet cannot be used with the parameter maxResults",
            ));
        }
        if let Some(max) = query.max_results {
            if max < 5 {
                return Err(ApiError::new(
                    "InvalidParameterValue",
                    format!("Value ( {max} ) for parameter maxResults is invalid. Expecting a value greater than 5."),
                ));
            }
            if max > 1000 {
                return Err(ApiError::new(
                    "InvalidParameterValue",
                    format!("Value ( {max} ) for parameter maxResults is invalid. Expecting a value less than 1000."),
                ));
            }
        }
        for (name, _) in &query.filters {
            if !(name.starts_with("tag:") || FILTER_NAMES.contains(&name.as_str())) {
                return Err(ApiError::new(
                    "InvalidParameterValue",
                    format!("The filter '{name}' is invalid"),
                ));
            }
        }
        let mut selected: Option<Vec<usize>> = None;
        if !query.instance_ids.is_empty() {
            if let Some(bad) = query.instance_ids.iter().find(|id| !is_ec2_instance_id(id)) {
                return Err(ApiError::new("InvalidInstanceID.Malformed", format!("Invalid id: \"{bad}\"")));
            }
            let missing: Vec<&str> = query
                .instance_ids
                .iter()
                .filter(|id| self.instance_position(id).is_none())
                .map(String::as_str)
                .collect();
            match missing.len() {
                0 => {}
                1 => {
                    return Err(ApiError::new(
                        "InvalidInstanceID.NotFound",
                        format!("The instance ID '{}' does not exist", missing[0]),
                    ))
                }
                _ => {
                    return Err(ApiError::new(
                        "InvalidInstanceID.NotFound",
                        format!("The instance IDs '{}' do not exist", missing.join(", ")),
                    ))
                }
            }
            let mut positions: Vec<usize> =
                query.instance_ids.iter().filter_map(|id| self.instance_position(id)).collect();
            positions.sort_unstable();
            positions.dedup();
            selected = Some(positions);
        }
        let mut print_parts: Vec<String> = query.instance_ids.clone();
        for (name, values) in &query.filters {
            print_parts.push(format!("{name}={}", values.join("\u{1e}")));
        }
        let print = paging::fingerprint(&print_parts.iter().map(String::as_str).collect::<Vec<_>>());
        let start = match &query.next_token {
            Some(token) => paging::decode(token, "DescribeInstances", print, "InvalidParameterValue")
                .map_err(|_| {
                    ApiError::new("InvalidParameterValue", format!("Invalid value '{token}' for nextToken"))
                })?,
            None => 0,
        };
        let limit = query.max_results.map_or(usize::MAX, |m| m as usize);
        let candidates: Box<dyn Iterator<Item = usize>> = match selected {
            Some(positions) => Box::new(positions.into_iter()),
            None => Box::new(0..self.instances.len()),
        };
        let mut rows = Vec::new();
        let mut next = None;
        for index in candidates.filter(|i| *i as u64 >= start) {
            let instance = &self.instances[index];
            if !query
                .filters
                .iter()
                .all(|(name, values)| filter_matches(instance, &self.region, name, values))
            {
                continue;
            }
            if rows.len() == limit {
                next = Some(index as u64);
                break;
            }
            rows.push(index);
        }
        let mut xml = String::with_capacity(256 + rows.len() * 2400);
        let _ = write!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeInstancesResponse xmlns=\"{NAMESPACE}\"><requestId>{}</requestId><reservationSet>",
            escape(request_id)
        );
        for index in rows {
            self.reservation_xml(&mut xml, &self.instances[index]);
        }
        xml.push_str("</reservationSet>");
        if let Some(cursor) = next {
            let _ =
                write!(xml, "<nextToken>{}</nextToken>", paging::encode("DescribeInstances", print, cursor));
        }
        xml.push_str("</DescribeInstancesResponse>");
        Ok(xml)
    }

    fn reservation_xml(&self, xml: &mut String, instance: &Instance) {
        let (state_code, state_name) = if instance.running { (16, "running") } else { (80, "stopped") };
        let zone = format!("{}{}", self.region, instance.availability_zone);
        let subnet = format!("subnet-{}", hex17(&zone, "subnet"));
        let vpc = format!("vpc-{}", hex17(&self.region, "vpc"));
        let security_group = format!("sg-{}", hex17(&self.region, "sg"));
        let _ = write!(
            xml,
            "<item><reservationId>r-{}</reservationId><ownerId>{}</ownerId><groupSet/><instancesSet><item>",
            hex17(&instance.id, "reservation"),
            self.account_id
        );
        let _ = write!(
            xml,
            "<instanceId>{}</instanceId><imageId>{}</imageId><instanceState><code>{state_code}</code><name>{state_name}</name></instanceState>",
            instance.id,
            instance.platform.image_id()
        );
        let _ = write!(
            xml,
            "<privateDnsName>{}</privateDnsName><dnsName/>",
            escape(&instance.private_dns_name(&self.region))
        );
        if instance.running {
            xml.push_str("<reason/>");
        } else {
            let _ = write!(
                xml,
                "<reason>User initiated ({})</reason>",
                to_datetime(instance.launch_ms).format("%Y-%m-%d %H:%M:%S GMT")
            );
        }
        let _ = write!(
            xml,
            "<amiLaunchIndex>0</amiLaunchIndex><productCodes/><instanceType>{}</instanceType><launchTime>{}</launchTime>",
            instance.instance_type,
            iso(instance.launch_ms)
        );
        let _ = write!(
            xml,
            "<placement><availabilityZone>{zone}</availabilityZone><groupName/><tenancy>default</tenancy></placement>"
        );
        if instance.platform.is_windows() {
            xml.push_str("<platform>windows</platform>");
        }
        let _ = write!(
            xml,
            "<monitoring><state>disabled</state></monitoring><subnetId>{subnet}</subnetId><vpcId>{vpc}</vpcId><privateIpAddress>{}</privateIpAddress>",
            instance.private_ip()
        );
        let _ = write!(
            xml,
            "<sourceDestCheck>true</sourceDestCheck><groupSet><item><groupId>{security_group}</groupId><groupName>default</groupName></item></groupSet>"
        );
        if !instance.running {
            xml.push_str("<stateReason><code>Client.UserInitiatedShutdown</code><message>Client.UserInitiatedShutdown: User initiated shutdown</message></stateReason>");
        }
        let _ = write!(
            xml,
            "<architecture>x86_64</architecture><rootDeviceType>ebs</rootDeviceType><rootDeviceName>{}</rootDeviceName><blockDeviceMapping/><virtualizationType>hvm</virtualizationType><clientToken/>",
            instance.platform.root_device_name()
        );
        xml.push_str("<tagSet>");
        for (key, value) in &instance.tags {
            let _ = write!(xml, "<item><key>{}</key><value>{}</value></item>", escape(key), escape(value));
        }
        xml.push_str("</tagSet>");
        let _ = write!(
            xml,
            "<hypervisor>xen</hypervisor><networkInterfaceSet/><ebsOptimized>false</ebsOptimized><enaSupport>true</enaSupport>"
        );
        if instance.agent.is_some() {
            let _ = write!(
                xml,
                "<iamInstanceProfile><arn>arn:aws:iam::{}:instance-profile/SSMManagedInstanceProfile</arn><id>AIPA{}</id></iamInstanceProfile>",
                self.account_id,
                hex17(&self.account_id, "profile").to_ascii_uppercase()
            );
        }
        let _ = write!(
            xml,
            "<platformDetails>{}</platformDetails><usageOperation>{}</usageOperation><usageOperationUpdateTime>{}</usageOperationUpdateTime>",
            escape(instance.platform.platform_details()),
            instance.platform.usage_operation(),
            iso(instance.launch_ms)
        );
        let _ = write!(
            xml,
            "<privateDnsNameOptions><hostnameType>ip-name</hostnameType><enableResourceNameDnsARecord>false</enableResourceNameDnsARecord><enableResourceNameDnsAAAARecord>false</enableResourceNameDnsAAAARecord></privateDnsNameOptions>"
        );
        xml.push_str(
            "<currentInstanceBootMode>legacy-bios</currentInstanceBootMode></item></instancesSet></item>",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn query_parsing_orders_numbered_members() {
        let query = parse_query(&params(&[
            ("Filter.2.Name", "instance-state-name"),
            ("Filter.2.Value.1", "running"),
            ("Filter.1.Name", "tag:Env"),
            ("Filter.1.Value.2", "staging"),
            ("Filter.1.Value.1", "prod"),
            ("InstanceId.2", "i-2"),
            ("InstanceId.1", "i-1"),
            ("MaxResults", "10"),
        ]))
        .expect("valid");
        assert_eq!(query.instance_ids, vec!["i-1", "i-2"]);
        assert_eq!(
            query.filters[0],
            ("tag:Env".to_string(), vec!["prod".to_string(), "staging".to_string()])
        );
        assert_eq!(query.filters[1].0, "instance-state-name");
        assert_eq!(query.max_results, Some(10));
        assert!(parse_query(&params(&[("MaxResults", "x")])).is_err());
    }

    #[test]
    fn errors_use_request_id_capitalised() {
        let xml = error_xml(&ApiError::new("InvalidAction", "a < b"), "req-1");
        assert!(xml.contains("<Code>InvalidAction</Code><Message>a &lt; b</Message>"));
        assert!(xml.ends_with("<RequestID>req-1</RequestID></Response>"));
    }

    #[test]
    fn filters_match_tags_states_and_platforms() {
        let scenario = crate::scenario::Scenario::demo().with_instances(60);
        let world = World::new(&scenario);
        let instance = world.instances.iter().find(|i| i.tag("Patch Group").is_some()).expect("grouped");
        let group = instance.tag("Patch Group").unwrap_or_default().to_string();
        let values = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let check = |name: &str, v: &[&str]| filter_matches(instance, "us-east-1", name, &values(v));
        assert!(check("tag:Patch Group", &[&group]));
        assert!(check("tag:Patch Group", &["nope", "*"]));
        assert!(!check("tag:Patch Group", &["nope"]));
        assert!(check("tag-key", &["Name"]));
        assert!(check("tag-value", &[&group]));
        assert!(check("instance-id", &[&instance.id]));
        assert!(check("instance-state-name", &[if instance.running { "running" } else { "stopped" }]));
        assert!(check("platform-details", &[instance.platform.platform_details()]));
        assert!(check("availability-zone", &["us-east-1?"]));
        assert_eq!(check("platform", &["windows"]), instance.platform.is_windows());
        assert!(!check("no-such-filter", &["*"]));
    }

    #[test]
    fn ids() {
        assert!(is_ec2_instance_id("i-0123456789abcdef0"));
        assert!(is_ec2_instance_id("i-0123abcd"));
        assert!(!is_ec2_instance_id("i-xyz"));
        assert!(!is_ec2_instance_id("0123456789abcdef0"));
    }
}
