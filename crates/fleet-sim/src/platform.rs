//! The operating systems a simulated instance can run, and everything each one looks like
//! through SSM and EC2.

use std::fmt;

/// An operating system of the simulated fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    AmazonLinux2,
    AmazonLinux2023,
    Ubuntu2204,
    Rhel9,
    WindowsServer2022,
}

impl Platform {
    pub const ALL: [Platform; 5] = [
        Platform::AmazonLinux2,
        Platform::AmazonLinux2023,
        Platform::Ubuntu2204,
        Platform::Rhel9,
        Platform::WindowsServer2022,
    ];

    /// Position in [`Platform::ALL`], used to index per-platform tables.
    pub fn index(self) -> usize {
        match self {
            Platform::AmazonLinux2 => 0,
            Platform::AmazonLinux2023 => 1,
            Platform::Ubuntu2204 => 2,
            Platform::Rhel9 => 3,
            Platform::WindowsServer2022 => 4,
        }
    }

    /// The name scenario files use.
    pub fn scenario_name(self) -> &'static str {
        match self {
            Platform::AmazonLinux2 => "amazon-linux-2",
            Platform::AmazonLinux2023 => "amazon-linux-2023",
            Platform::Ubuntu2204 => "ubuntu-22.04",
            Platform::Rhel9 => "rhel-9",
            Platform::WindowsServer2022 => "windows-server-2022",
        }
    }

    pub fn from_scenario_name(name: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.scenario_name() == name)
    }

    /// SSM's `OperatingSystem` enum value (patch baselines).
    pub fn operating_system(self) -> &'static str {
        match self {
            Platform::AmazonLinux2 => "AMAZON_LINUX_2",
            Platform::AmazonLinux2023 => "AMAZON_LINUX_2023",
            Platform::Ubuntu2204 => "UBUNTU",
            Platform::Rhel9 => "REDHAT_ENTERPRISE_LINUX",
            Platform::WindowsServer2022 => "WINDOWS",
        }
    }

    pub fn from_operating_system(os: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.operating_system() == os)
    }

    pub fn is_windows(self) -> bool {
        self == Platform::WindowsServer2022
    }

    /// `PlatformType` in DescribeInstanceInformation.
    pub fn platform_type(self) -> &'static str {
        if self.is_windows() {
            "Windows"
        } else {
            "Linux"
        }
    }

    /// `PlatformName` in DescribeInstanceInformation, as the SSM agent reports it.
    pub fn platform_name(self) -> &'static str {
        match self {
            Platform::AmazonLinux2 | Platform::AmazonLinux2023 => "Amazon Linux",
            Platform::Ubuntu2204 => "Ubuntu",
            Platform::Rhel9 => "Red Hat Enterprise Linux",
            Platform::WindowsServer2022 => "Microsoft Windows Server 2022 Datacenter",
        }
    }

    /// `PlatformVersion` in DescribeInstanceInformation.
    pub fn platform_version(self) -> &'static str {
        match self {
            Platform::AmazonLinux2 => "2",
            Platform::AmazonLinux2023 => "2023",
            Platform::Ubuntu2204 => "22.04",
            Platform::Rhel9 => "9.4",
            Platform::WindowsServer2022 => "10.0.20348",
        }
    }

    /// EC2's `PlatformDetails` (the billing product of the AMI).
    pub fn platform_details(self) -> &'static str {
        match self {
            Platform::AmazonLinux2 | Platform::AmazonLinux2023 | Platform::Ubuntu2204 => "Linux/UNIX",
            Platform::Rhel9 => "Red Hat Enterprise Linux",
            Platform::WindowsServer2022 => "Windows",
        }
    }

    /// EC2's `UsageOperation` matching [`Platform::platform_details`].
    pub fn usage_operation(self) -> &'static str {
        match self {
            Platform::AmazonLinux2 | Platform::AmazonLinux2023 | Platform::Ubuntu2204 => "RunInstances",
            Platform::Rhel9 => "RunInstances:0010",
            Platform::WindowsServer2022 => "RunInstances:0002",
        }
    }

    /// The `PRODUCT` patch property, as patch filters and DescribeAvailablePatches name it.
    pub fn product(self) -> &'static str {
        match self {
            Platform::AmazonLinux2 => "AmazonLinux2",
            Platform::AmazonLinux2023 => "AmazonLinux2023",
            Platform::Ubuntu2204 => "Ubuntu22.04",
            Platform::Rhel9 => "RedhatEnterpriseLinux9",
            Platform::WindowsServer2022 => "WindowsServer2022",
        }
    }

    /// Other spellings of the product AWS accepts in filters.
    pub fn product_aliases(self) -> &'static [&'static str] {
        match self {
            Platform::AmazonLinux2 => &["AmazonLinux2", "AmazonLinux2.0"],
            Platform::AmazonLinux2023 => &["AmazonLinux2023"],
            Platform::Ubuntu2204 => &["Ubuntu22.04"],
            Platform::Rhel9 => &["RedhatEnterpriseLinux9", "RedhatEnterpriseLinux9.4"],
            Platform::WindowsServer2022 => &["WindowsServer2022"],
        }
    }

    pub fn product_family(self) -> &'static str {
        match self {
            Platform::AmazonLinux2 | Platform::AmazonLinux2023 => "AmazonLinux",
            Platform::Ubuntu2204 => "Ubuntu",
            Platform::Rhel9 => "RedhatEnterpriseLinux",
            Platform::WindowsServer2022 => "Windows",
        }
    }

    /// The AWS-RunPatchBaseline step that runs on this platform.
    pub fn plugin_name(self) -> &'static str {
        if self.is_windows() {
            "PatchWindows"
        } else {
            "PatchLinux"
        }
    }

    /// Name of AWS's predefined default baseline for this operating system.
    pub fn default_baseline_name(self) -> &'static str {
        match self {
            Platform::AmazonLinux2 => "AWS-AmazonLinux2DefaultPatchBaseline",
            Platform::AmazonLinux2023 => "AWS-AmazonLinux2023DefaultPatchBaseline",
            Platform::Ubuntu2204 => "AWS-UbuntuDefaultPatchBaseline",
            Platform::Rhel9 => "AWS-RedHatDefaultPatchBaseline",
            Platform::WindowsServer2022 => "AWS-WindowsPredefinedPatchBaseline-OS",
        }
    }

    /// DescribeAvailablePatches only knows Amazon Linux (1 and 2) and Windows Server.
    pub fn listed_by_describe_available_patches(self) -> bool {
        matches!(self, Platform::AmazonLinux2 | Platform::WindowsServer2022)
    }

    pub fn image_id(self) -> &'static str {
        match self {
            Platform::AmazonLinux2 => "ami-0a3c3a20c09d6f377",
            Platform::AmazonLinux2023 => "ami-0fff1b9a61dec8a5f",
            Platform::Ubuntu2204 => "ami-0e86e20dae9224db8",
            Platform::Rhel9 => "ami-0583d8c7a9c35822c",
            Platform::WindowsServer2022 => "ami-0069eac59d05ae12b",
        }
    }

    pub fn root_device_name(self) -> &'static str {
        match self {
            Platform::Ubuntu2204 => "/dev/sda1",
            Platform::WindowsServer2022 => "/dev/sda1",
            _ => "/dev/xvda",
        }
    }

    /// Instance types drawn for this platform.
    pub fn instance_types(self) -> &'static [&'static str] {
        if self.is_windows() {
            &["m5.large", "m5.xlarge", "t3.large", "r5.large"]
        } else {
            &["t3.medium", "t3.large", "m6i.large", "c6i.xlarge", "r6i.large"]
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scenario_name())
    }
}

/// Every `OperatingSystem` value SSM accepts for a patch baseline (the model's enum).
pub const OPERATING_SYSTEMS: [&str; 15] = [
    "WINDOWS",
    "AMAZON_LINUX",
    "AMAZON_LINUX_2",
    "AMAZON_LINUX_2022",
    "UBUNTU",
    "REDHAT_ENTERPRISE_LINUX",
    "SUSE",
    "CENTOS",
    "ORACLE_LINUX",
    "DEBIAN",
    "MACOS",
    "RASPBIAN",
    "ROCKY_LINUX",
    "ALMA_LINUX",
    "AMAZON_LINUX_2023",
];

/// Patch filter keys SSM accepts in baselines for an operating system.
pub fn baseline_filter_keys(operating_system: &str) -> &'static [&'static str] {
    match operating_system {
        "WINDOWS" => {
            &["PATCH_SET", "PRODUCT", "PRODUCT_FAMILY", "CLASSIFICATION", "MSRC_SEVERITY", "PATCH_ID"]
        }
        "UBUNTU" | "DEBIAN" | "RASPBIAN" => &["PRODUCT", "PRIORITY", "SECTION"],
        "MACOS" => &["PRODUCT", "CLASSIFICATION"],
        _ => &["PRODUCT", "CLASSIFICATION", "SEVERITY"],
    }
}

/// Operating systems where rules approve patches as soon as they are released: their
/// repositories carry no reliable release dates, so ApproveAfterDays/ApproveUntilDate do not apply.
pub fn approval_delay_applies(operating_system: &str) -> bool {
    !matches!(operating_system, "UBUNTU" | "DEBIAN" | "RASPBIAN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for platform in Platform::ALL {
            assert_eq!(Platform::from_scenario_name(platform.scenario_name()), Some(platform));
            assert_eq!(Platform::from_operating_system(platform.operating_system()), Some(platform));
            assert_eq!(Platform::ALL[platform.index()], platform);
            assert!(OPERATING_SYSTEMS.contains(&platform.operating_system()));
        }
    }
}
