-- Argo CD health of a GemmaServer (gemma.ai/v1alpha1), read from the status the operator writes:
-- observedGeneration first (a status about an older spec says nothing about this one), then the
-- Suspended, Degraded and Ready conditions, in the order the operator derives its phase.
local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function said(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local suspended = condition("Suspended")
if suspended ~= nil and suspended.status == "True" then
  hs.status = "Suspended"
  hs.message = said(suspended, "Suspended")
  return hs
end

local degraded = condition("Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.reason .. ": " .. said(degraded, "degraded")
  return hs
end
if obj.status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "Failed"
  return hs
end

local ready = condition("Ready")
-- spec.replicas 0 is a state reached, as Argo CD counts a Deployment scaled to zero healthy.
if ready ~= nil and (ready.status == "True" or ready.reason == "ScaledToZero") then
  hs.status = "Healthy"
  hs.message = said(ready, "Ready")
  return hs
end

local progressing = condition("Progressing")
hs.status = "Progressing"
hs.message = said(progressing, said(ready, "Waiting for the replicas to become ready"))
-- While weights download or load, their progress says more than a replica count.
local sources = condition("SourcesReady")
if sources ~= nil and (sources.reason == "Downloading" or sources.reason == "Loading") then
  hs.message = said(sources, hs.message)
end
return hs
