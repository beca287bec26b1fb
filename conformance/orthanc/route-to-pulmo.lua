-- Orthanc routing rule: when a study is stable, send its CT series to pulmo, once.
--
-- Tested by tests/orthanc.rs with Orthanc 1.10.1 (Debian). Orthanc calls OnStableStudy when no new
-- instance has arrived for StableAge seconds. Each CT series sent is marked with the SentToPulmo
-- metadata (declared in orthanc.json), so that pulmo's results arriving in the same study, which make
-- it stable once more, do not send the CT again. `SendToModality` fails for a study in 1.10.1; a
-- POST to /modalities/NAME/store works, series by series.

PULMO = 'pulmo'             -- the DicomModalities entry of orthanc.json
MIN_SLICES = 20             -- a scout or a single slice is not worth sending

function OnStableStudy(studyId, tags, metadata)
   local series = ParseJson(RestApiGet('/studies/' .. studyId .. '/series?expand'))
   for _, s in ipairs(series) do
      local modality = s['MainDicomTags']['Modality']
      local count = #s['Instances']
      local sent = ParseJson(RestApiGet('/series/' .. s['ID'] .. '/metadata'))
      local already = false
      for _, name in ipairs(sent) do
         if name == 'SentToPulmo' then already = true end
      end
      if modality == 'CT' and count >= MIN_SLICES and not already then
         print('pulmo routing: series ' .. s['ID'] .. ' (' .. count .. ' CT instances) to ' .. PULMO)
         local ok, err = pcall(RestApiPost, '/modalities/' .. PULMO .. '/store', s['ID'])
         if ok then
            RestApiPut('/series/' .. s['ID'] .. '/metadata/SentToPulmo', 'yes')
         else
            -- Not marked: the next stable event (or a person with the REST API) tries again.
            print('pulmo routing: sending series ' .. s['ID'] .. ' failed: ' .. tostring(err))
         end
      end
   end
end
