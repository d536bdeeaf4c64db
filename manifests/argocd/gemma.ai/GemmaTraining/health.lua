-- Argo CD health of a GemmaTraining (gemma.ai/v1alpha1), read from the status the operator writes.
-- Like a Job: Healthy once it Succeeded, Progressing while pending or running, Degraded when it Failed
-- (an invalid spec, a missing JobSet API, or maxRestarts exhausted), Suspended while spec.suspend holds.
-- observedGeneration first: a status about an older spec says nothing about this one.
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

local failed = condition("Failed")
if failed ~= nil and failed.status == "True" then
  hs.status = "Degraded"
  hs.message = failed.reason .. ": " .. said(failed, "failed")
  return hs
end

local succeeded = condition("Succeeded")
if succeeded ~= nil and succeeded.status == "True" then
  hs.status = "Healthy"
  hs.message = said(succeeded, "Succeeded")
  return hs
end

local suspended = condition("Suspended")
if suspended ~= nil and suspended.status == "True" then
  hs.status = "Suspended"
  hs.message = said(suspended, "Suspended")
  return hs
end

local running = condition("Running")
hs.status = "Progressing"
hs.message = said(running, "Waiting for the slice to start")
-- While weights download or load, their progress says more than a replica count.
local sources = condition("SourcesReady")
if sources ~= nil and (sources.reason == "Downloading" or sources.reason == "Loading") then
  hs.message = said(sources, hs.message)
end
return hs
