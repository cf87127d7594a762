-- PowerDNS Recursor Lua config: the union as an RPZ policy zone
rpzFile("@@DIR@@/rpz.zone", {policyName="bench"})
