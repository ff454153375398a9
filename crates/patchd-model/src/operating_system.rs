use crate::spelled_enum;

spelled_enum! {
    /// SSM's `OperatingSystem`: what a patch baseline is for, and what patchd makes of what an
    /// instance's agent or EC2 reports about it.
    pub OperatingSystem {
        Windows = "WINDOWS",
        AmazonLinux = "AMAZON_LINUX",
        AmazonLinux2 = "AMAZON_LINUX_2",
        AmazonLinux2022 = "AMAZON_LINUX_2022",
        AmazonLinux2023 = "AMAZON_LINUX_2023",
        Ubuntu = "UBUNTU",
        RedhatEnterpriseLinux = "REDHAT_ENTERPRISE_LINUX",
        Suse = "SUSE",
        Centos = "CENTOS",
        OracleLinux = "ORACLE_LINUX",
        Debian = "DEBIAN",
        Macos = "MACOS",
        Raspbian = "RASPBIAN",
        RockyLinux = "ROCKY_LINUX",
        AlmaLinux = "ALMA_LINUX",
    }
}

/// Platform names (lower case) by the prefix an agent reports them with. Amazon Linux is
/// told apart by version, below.
const BY_NAME_PREFIX: &[(&str, OperatingSystem)] = &[
    ("microsoft windows", OperatingSystem::Windows),
    ("windows", OperatingSystem::Windows),
    ("macos", OperatingSystem::Macos),
    ("ubuntu", OperatingSystem::Ubuntu),
    ("debian", OperatingSystem::Debian),
    ("raspbian", OperatingSystem::Raspbian),
    ("red hat", OperatingSystem::RedhatEnterpriseLinux),
    ("centos", OperatingSystem::Centos),
    ("oracle linux", OperatingSystem::OracleLinux),
    ("rocky", OperatingSystem::RockyLinux),
    ("almalinux", OperatingSystem::AlmaLinux),
    ("alma linux", OperatingSystem::AlmaLinux),
    ("sles", OperatingSystem::Suse),
    ("suse", OperatingSystem::Suse),
];

impl OperatingSystem {
    /// Whether SSM's own catalog (DescribeAvailablePatches) gives this system's patches their
    /// release dates. Only Windows Server and Amazon Linux 1 and 2 have one; the others need a
    /// vendor advisory feed.
    pub fn dated_by_ssm(self) -> bool {
        matches!(
            self,
            OperatingSystem::Windows | OperatingSystem::AmazonLinux | OperatingSystem::AmazonLinux2
        )
    }

    /// Whether SSM approves this system's patches on release whatever a rule's delay says:
    /// Debian's repositories carry no release dates SSM could count from.
    pub fn approves_on_release(self) -> bool {
        matches!(self, OperatingSystem::Ubuntu | OperatingSystem::Debian | OperatingSystem::Raspbian)
    }

    /// The vendor namespaces of this system's advisory ids. The store keeps the patches of
    /// every system in one list, and an imported advisory carries nothing but its id and date,
    /// so the id's prefix is what tells which baseline it concerns.
    pub fn advisory_prefixes(self) -> &'static [&'static str] {
        match self {
            OperatingSystem::Windows => &["KB"],
            OperatingSystem::AmazonLinux => &["ALAS-"],
            OperatingSystem::AmazonLinux2 => &["ALAS2-"],
            OperatingSystem::AmazonLinux2022 => &["ALAS2022-"],
            OperatingSystem::AmazonLinux2023 => &["ALAS2023-"],
            OperatingSystem::RedhatEnterpriseLinux => &["RHSA-", "RHBA-", "RHEA-"],
            // CentOS republishes Red Hat's errata under its own prefixes, and yum also shows Red Hat's.
            OperatingSystem::Centos => &["CESA-", "CEBA-", "CEEA-", "RHSA-", "RHBA-", "RHEA-"],
            OperatingSystem::OracleLinux => &["ELSA-", "ELBA-", "ELEA-"],
            OperatingSystem::RockyLinux => &["RLSA-", "RLBA-", "RLEA-"],
            OperatingSystem::AlmaLinux => &["ALSA-", "ALBA-", "ALEA-"],
            OperatingSystem::Suse => &["SUSE-"],
            OperatingSystem::Ubuntu => &["USN-"],
            OperatingSystem::Debian | OperatingSystem::Raspbian => &["DSA-", "DLA-"],
            OperatingSystem::Macos => &[],
        }
    }

    /// From what an SSM agent reports (DescribeInstanceInformation's `PlatformType`,
    /// `PlatformName` and `PlatformVersion`).
    pub fn of_agent(platform_type: Option<&str>, name: &str, version: &str) -> Option<OperatingSystem> {
        match platform_type {
            Some("Windows") => Some(OperatingSystem::Windows),
            Some("MacOS") => Some(OperatingSystem::Macos),
            _ => OperatingSystem::of_platform(&format!("{} {}", name.trim(), version.trim())),
        }
    }

    /// From a platform's name and version in one text, as patchd records it (`Amazon Linux
    /// 2`, `Amazon Linux AMI 2018.03`, `Ubuntu 22.04`, `Microsoft Windows Server 2022
    /// Datacenter`). None for a name patchd does not know.
    pub fn of_platform(platform: &str) -> Option<OperatingSystem> {
        let platform = platform.trim().to_ascii_lowercase();
        if let Some(rest) = platform.strip_prefix("amazon linux") {
            let rest = rest.trim_start();
            // Amazon Linux 1 reports itself as `Amazon Linux AMI` with versions like 2018.03.
            if rest.starts_with("ami") {
                return Some(OperatingSystem::AmazonLinux);
            }
            let major: String = rest.chars().take_while(char::is_ascii_digit).collect();
            return match major.as_str() {
                "1" => Some(OperatingSystem::AmazonLinux),
                "2" => Some(OperatingSystem::AmazonLinux2),
                "2022" => Some(OperatingSystem::AmazonLinux2022),
                "2023" => Some(OperatingSystem::AmazonLinux2023),
                year if year.len() == 4 && year.starts_with("201") => Some(OperatingSystem::AmazonLinux),
                _ => None,
            };
        }
        BY_NAME_PREFIX.iter().find(|(prefix, _)| platform.starts_with(prefix)).map(|(_, os)| *os)
    }

    /// From EC2's `PlatformDetails`, which names only the operating systems AWS bills for:
    /// most Linux AMIs are just `Linux/UNIX`, and tell nothing.
    pub fn of_ec2_platform_details(details: &str) -> Option<OperatingSystem> {
        let details = details.trim().to_ascii_lowercase();
        const BILLED: &[(&str, OperatingSystem)] = &[
            ("windows", OperatingSystem::Windows),
            ("red hat", OperatingSystem::RedhatEnterpriseLinux),
            ("suse", OperatingSystem::Suse),
            ("ubuntu pro", OperatingSystem::Ubuntu),
        ];
        BILLED.iter().find(|(prefix, _)| details.starts_with(prefix)).map(|(_, os)| *os)
    }
}

#[cfg(test)]
mod tests {
    use super::OperatingSystem as Os;

    #[test]
    fn agents_name_amazon_linux_by_version() {
        let cases = [
            ("Amazon Linux", "2", Some(Os::AmazonLinux2)),
            ("Amazon Linux", "2023.5.20240805", Some(Os::AmazonLinux2023)),
            ("Amazon Linux", "2022", Some(Os::AmazonLinux2022)),
            ("Amazon Linux AMI", "2018.03", Some(Os::AmazonLinux)),
            ("Amazon Linux", "2018.03", Some(Os::AmazonLinux)),
            ("Amazon Linux", "", None),
            ("Amazon Linux", "3", None),
        ];
        for (name, version, expected) in cases {
            assert_eq!(Os::of_agent(Some("Linux"), name, version), expected, "{name} {version}");
        }
    }

    #[test]
    fn agents_name_other_systems_by_prefix_and_type() {
        let cases = [
            ("Linux", "Ubuntu", "22.04", Some(Os::Ubuntu)),
            ("Linux", "Red Hat Enterprise Linux", "9.3", Some(Os::RedhatEnterpriseLinux)),
            ("Linux", "AlmaLinux", "9", Some(Os::AlmaLinux)),
            ("Linux", "SLES", "15.5", Some(Os::Suse)),
            ("Windows", "Anything", "10.0", Some(Os::Windows)),
            ("MacOS", "Mac OS X", "14.1", Some(Os::Macos)),
            ("Linux", "Gentoo", "2.14", None),
        ];
        for (platform_type, name, version, expected) in cases {
            assert_eq!(Os::of_agent(Some(platform_type), name, version), expected, "{name} {version}");
        }
    }

    #[test]
    fn recorded_platforms_and_ec2_billing_name_what_they_can() {
        let recorded = [
            ("Amazon Linux 2", Some(Os::AmazonLinux2)),
            ("amazon linux 2 (karoo)", Some(Os::AmazonLinux2)),
            ("Amazon Linux AMI 2018.03", Some(Os::AmazonLinux)),
            ("Microsoft Windows Server 2022 Datacenter", Some(Os::Windows)),
            ("Linux/UNIX", None),
        ];
        for (platform, expected) in recorded {
            assert_eq!(Os::of_platform(platform), expected, "{platform}");
        }
        // EC2 names only what AWS bills for.
        let billed = [
            ("Windows with SQL Server Standard", Some(Os::Windows)),
            ("Red Hat BYOL Linux", Some(Os::RedhatEnterpriseLinux)),
            ("Ubuntu Pro", Some(Os::Ubuntu)),
            ("Linux/UNIX", None),
        ];
        for (details, expected) in billed {
            assert_eq!(Os::of_ec2_platform_details(details), expected, "{details}");
        }
    }

    #[test]
    fn only_windows_and_amazon_linux_1_and_2_have_ssm_catalogs() {
        let dated: Vec<Os> = Os::ALL.iter().copied().filter(|os| os.dated_by_ssm()).collect();
        assert_eq!(dated, [Os::Windows, Os::AmazonLinux, Os::AmazonLinux2]);
    }
}
