-- dnsdist: one UDP/TCP listener, NSD as the only backend, a packet cache, and
-- the union as a SuffixMatchNode answered NXDOMAIN (the name and subdomains).
setSecurityPollSuffix("")
setLocal("127.0.0.1:@@PORT@@", {reusePort=false})
newServer({address="127.0.0.1:@@NSD_PORT@@", name="nsd", checkInterval=3600})
pc = newPacketCache(1000000, {maxTTL=86400, minTTL=0, temporaryFailureTTL=60, staleTTL=60, dontAge=false})
getPool(""):setCache(pc)
smn = newSuffixMatchNode()
for line in io.lines("@@LIST@@") do
  smn:add(line)
end
addAction(SuffixMatchNodeRule(smn, true), RCodeAction(DNSRCode.NXDOMAIN))
