//! Which instances a group covers at call time, and whether SSM can reach them.
//!
//! EC2 is the source of truth for membership (tags, ids, running); SSM only says which of
//! those instances have a working agent. An instance EC2 lists and SSM does not is a coverage
//! gap, reported rather than silently dropped: PCI DSS asks for every in-scope system.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_ec2::types::Filter;
use aws_sdk_ssm::types::InstanceInformationStringFilter;
use chrono::{DateTime, Utc};
use patchd_config::Group;
use patchd_model::{OperatingSystem, PingStatus, Reported};
use tracing::instrument;

use crate::client::AwsClients;
use crate::error::AwsError;
use crate::time::utc;

/// EC2 pages DescribeInstances up to 1000 instances.
const EC2_PAGE: i32 = 1000;
/// EC2 refuses more than 200 filter values in one call (FilterLimitExceeded).
const EC2_MAX_FILTER_VALUES: usize = 200;
/// DescribeInstanceInformation answers at most 50 nodes a page; asking for 50 ids at a time
/// makes every chunk exactly one call.
const SSM_IDS_PER_CALL: usize = 50;

/// One instance of a group, as EC2 and SSM see it at resolution time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub instance_id: String,
    /// The `Name` tag.
    pub name: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// EC2's `PlatformDetails`, e.g. `Linux/UNIX`, `Red Hat Enterprise Linux`, `Windows`.
    pub platform_details: Option<String>,
    pub coverage: Coverage,
}

impl Target {
    /// Only instances whose agent is online may be sent commands; the others are gaps.
    pub fn can_take_commands(&self) -> bool {
        matches!(self.coverage, Coverage::Managed { .. })
    }

    /// Whether SSM manages it at all (its agent online or not): SSM may then hold compliance
    /// for it, from the last Scan or Install it reported before its agent went quiet.
    pub fn has_agent(&self) -> bool {
        matches!(self.coverage, Coverage::Managed { .. } | Coverage::ConnectionLost { .. })
    }

    /// SSM's `OperatingSystem` of the instance: from what its agent reports, else from EC2's
    /// billing product. None when neither tells, as for most Linux AMIs, which EC2 calls
    /// `Linux/UNIX`.
    pub fn operating_system(&self) -> Option<OperatingSystem> {
        let agent = match &self.coverage {
            Coverage::Managed { agent } | Coverage::ConnectionLost { agent } => Some(agent),
            Coverage::Unmanaged => None,
        };
        agent
            .and_then(|a| {
                let name = a.platform_name.as_deref()?;
                OperatingSystem::of_agent(
                    a.platform_type.as_deref(),
                    name,
                    a.platform_version.as_deref().unwrap_or(""),
                )
            })
            .or_else(|| OperatingSystem::of_ec2_platform_details(self.platform_details.as_deref()?))
    }
}

/// Whether SSM can patch an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    /// A managed node whose agent is online.
    Managed { agent: Agent },
    /// A managed node whose agent stopped reporting (`ConnectionLost` or `Inactive`): a
    /// command would wait as Delayed and time out undelivered. A coverage gap.
    ConnectionLost { agent: Agent },
    /// EC2 lists it, SSM does not: no agent, no instance profile, or no route to SSM.
    /// A coverage gap.
    Unmanaged,
}

impl Coverage {
    pub fn is_gap(&self) -> bool {
        !matches!(self, Coverage::Managed { .. })
    }
}

/// What SSM knows about an instance's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub ping: Reported<PingStatus>,
    pub last_ping: Option<DateTime<Utc>>,
    /// `Linux`, `Windows` or `MacOS`.
    pub platform_type: Option<String>,
    /// e.g. `Amazon Linux`, `Microsoft Windows Server 2022 Datacenter`.
    pub platform_name: Option<String>,
    pub platform_version: Option<String>,
    pub agent_version: Option<String>,
}

/// An instance as EC2 describes it, before the SSM join.
struct Ec2Instance {
    instance_id: String,
    tags: BTreeMap<String, String>,
    platform_details: Option<String>,
}

impl AwsClients {
    /// The running instances `group` selects now, each classified by what SSM can do with
    /// it, sorted by instance id.
    ///
    /// Calls: `ceil(n / 1000)` DescribeInstances (one per 200 listed ids when the group lists
    /// ids), then `ceil(n / 50)` DescribeInstanceInformation, where n is the number of running
    /// instances EC2 returns. SSM is asked by instance id rather than by listing every managed
    /// node of the account: that costs calls in proportion to the group, not to the account,
    /// and SSM's tag filters could not be combined with the id filter a group may need nor
    /// see the same tag state EC2 just answered with.
    #[instrument(skip(self, group), fields(group = %group.name), err(Display))]
    pub async fn resolve_group(&self, group: &Group) -> Result<Vec<Target>, AwsError> {
        let ec2 = self.describe_group_instances(group).await?;
        let ids: Vec<String> = ec2.iter().map(|i| i.instance_id.clone()).collect();
        let mut agents = self.describe_agents(&ids).await?;
        let mut targets: Vec<Target> = ec2
            .into_iter()
            .map(|instance| {
                let coverage = match agents.remove(&instance.instance_id) {
                    Some(agent) if agent.ping == PingStatus::Online => Coverage::Managed { agent },
                    Some(agent) => Coverage::ConnectionLost { agent },
                    None => Coverage::Unmanaged,
                };
                Target {
                    name: instance.tags.get("Name").cloned(),
                    instance_id: instance.instance_id,
                    tags: instance.tags,
                    platform_details: instance.platform_details,
                    coverage,
                }
            })
            .collect();
        targets.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        let managed = targets.iter().filter(|t| t.can_take_commands()).count();
        let unmanaged = targets.iter().filter(|t| t.coverage == Coverage::Unmanaged).count();
        tracing::debug!(
            instances = targets.len(),
            managed,
            connection_lost = targets.len() - managed - unmanaged,
            unmanaged,
            "group resolved"
        );
        Ok(targets)
    }

    async fn describe_group_instances(&self, group: &Group) -> Result<Vec<Ec2Instance>, AwsError> {
        const OPERATION: &str = "DescribeInstances";
        let mut base: Vec<Filter> = group
            .tags
            .0
            .iter()
            .map(|(key, values)| {
                if values.is_empty() {
                    Filter::builder().name("tag-key").values(key).build()
                } else {
                    Filter::builder().name(format!("tag:{key}")).set_values(Some(values.clone())).build()
                }
            })
            .collect();
        base.push(Filter::builder().name("instance-state-name").values("running").build());

        let used: usize = base.iter().map(|f| f.values().len()).sum();
        let id_chunks: Vec<Option<&[String]>> = if group.instance_ids.is_empty() {
            vec![None]
        } else {
            let room = EC2_MAX_FILTER_VALUES.saturating_sub(used).max(1);
            group.instance_ids.chunks(room).map(Some).collect()
        };

        let mut instances = Vec::new();
        for ids in id_chunks {
            let mut filters = base.clone();
            if let Some(ids) = ids {
                filters.push(Filter::builder().name("instance-id").set_values(Some(ids.to_vec())).build());
            }
            let mut pages = self
                .ec2
                .describe_instances()
                .set_filters(Some(filters))
                .into_paginator()
                .page_size(EC2_PAGE)
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| AwsError::from_sdk(OPERATION, e))?;
                for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                    let Some(id) = instance.instance_id() else { continue };
                    instances.push(Ec2Instance {
                        instance_id: id.to_string(),
                        tags: instance
                            .tags()
                            .iter()
                            .filter_map(|t| {
                                Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))
                            })
                            .collect(),
                        platform_details: instance.platform_details().map(str::to_string),
                    });
                }
            }
        }
        Ok(instances)
    }

    /// The SSM agents of the given instances (DescribeInstanceInformation, 50 ids a call); an
    /// instance SSM does not manage is missing from the map.
    pub async fn describe_agents(&self, instance_ids: &[String]) -> Result<HashMap<String, Agent>, AwsError> {
        const OPERATION: &str = "DescribeInstanceInformation";
        let mut agents = HashMap::with_capacity(instance_ids.len());
        for chunk in instance_ids.chunks(SSM_IDS_PER_CALL) {
            let filter = InstanceInformationStringFilter::builder()
                .key("InstanceIds")
                .set_values(Some(chunk.to_vec()))
                .build()
                .expect("key and values are set");
            let mut pages = self
                .ssm
                .describe_instance_information()
                .filters(filter)
                .into_paginator()
                .page_size(SSM_IDS_PER_CALL as i32)
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| AwsError::from_sdk(OPERATION, e))?;
                for info in page.instance_information_list() {
                    let Some(id) = info.instance_id() else { continue };
                    let agent = Agent {
                        ping: info
                            .ping_status()
                            .map_or(Reported::Known(PingStatus::Inactive), |p| Reported::parse(p.as_str())),
                        last_ping: info.last_ping_date_time().and_then(utc),
                        platform_type: info.platform_type().map(|p| p.as_str().to_string()),
                        platform_name: info.platform_name().map(str::to_string),
                        platform_version: info.platform_version().map(str::to_string),
                        agent_version: info.agent_version().map(str::to_string),
                    };
                    agents.insert(id.to_string(), agent);
                }
            }
        }
        Ok(agents)
    }
}
