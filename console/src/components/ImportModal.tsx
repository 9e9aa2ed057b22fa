// File import (POS, distributors): upload progress, then the pipeline's processing of the file's orders
// (the import job, polled), then the report; a rejected file names every bad row.
import { useEffect, useRef, useState } from 'react';
import { Alert, Button, Form, Input, Modal, Progress, Select, Typography, Upload } from 'antd';
import { UploadOutlined } from '@ant-design/icons';
import { Link } from 'react-router-dom';
import { api, ApiError, followJob, upload, type Job } from '../api';
import { useApi } from '../hooks';
import { useI18n } from '../i18n';
import { CHANNELS } from '../codes';
import { errorText } from './ErrorState';
import { showApiError } from './formErrors';

export function ImportModal({ onClose }: { onClose: () => void }) {
  const { t, label } = useI18n();
  const [form] = Form.useForm();
  const [file, setFile] = useState<File | null>(null);
  const [percent, setPercent] = useState<number | null>(null);
  const [report, setReport] = useState<{ rows: number; orders: number; job_id?: number } | null>(null);
  const [job, setJob] = useState<Job | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const [rowErrors, setRowErrors] = useState<any[]>([]);
  const mappings = useApi((signal) => api<string[]>('/import-mappings', { signal }), []);
  const following = useRef<AbortController | null>(null);
  useEffect(() => () => following.current?.abort(), []); // closing the dialog stops the polling, not the import

  const follow = async (jobId: number) => {
    const controller = new AbortController();
    following.current = controller;
    try {
      const first = await api<Job>(`/jobs/import/${jobId}`, { signal: controller.signal });
      await followJob(first, setJob, controller.signal);
    } catch (err) {
      if ((err as Error)?.name === 'AbortError') return;
      setProblem(err instanceof ApiError ? errorText(t, label, err) : String(err));
    }
  };

  const submit = async () => {
    const values = await form.validateFields().catch(() => null);  // the form shows what is missing
    if (!values) return;
    if (!file) {
      form.setFields([{ name: 'file', errors: [t('import.fileRequired')] }]);
      return;
    }
    const data = new FormData();
    data.append('file', file);
    data.append('mapping', values.mapping);
    data.append('channel', values.channel);
    data.append('shop', values.shop || 'default');
    setPercent(0);
    setRowErrors([]);
    try {
      const uploaded = await upload<{ rows: number; orders: number; job_id?: number }>('/imports', data, setPercent);
      setReport(uploaded);
      if (uploaded.job_id !== undefined) void follow(uploaded.job_id);
    } catch (err) {
      setPercent(null);
      if (err instanceof ApiError && Array.isArray(err.body?.errors)) setRowErrors(err.body.errors);
      showApiError(err, (e) => errorText(t, label, e), form, ['mapping', 'channel', 'shop', 'file']);
    }
  };

  return (
    <Modal open title={t('orders.import')} onCancel={onClose} footer={report
      ? <Button type="primary" onClick={onClose}>{t('action.close')}</Button>
      : [<Button key="c" onClick={onClose}>{t('action.cancel')}</Button>,
         <Button key="o" type="primary" loading={percent !== null} onClick={submit}>{t('import.start')}</Button>]}>
      {report ? (
        <div data-testid="import-report">
          <Alert type={job?.state === 'done' ? 'success' : 'info'} showIcon message={t('import.done', { rows: report.rows, orders: report.orders })}
            description={job?.state === 'done' ? undefined : t('import.async')} />
          {job && job.counts && job.state !== 'failed' && (
            <div data-testid="import-progress" data-percent={job.percent} style={{ marginTop: 12 }}>
              <Progress percent={job.percent} status={job.state === 'running' ? 'active' : 'success'} format={(p) => `${p}%`} />
              <Typography.Text type="secondary">
                {job.state === 'done' ? t('import.finished', job.counts) : job.counts.processed === 0 ? t('import.waiting') : t('import.progress', job.counts)}
              </Typography.Text>
            </div>
          )}
          {job?.state === 'done' && (job.counts?.quarantined ?? 0) > 0 && (
            <Alert style={{ marginTop: 12 }} type="warning" showIcon message={t('import.quarantined')}
              action={<Link to="/quarantine" onClick={onClose}>{t('nav.quarantine')}</Link>} />
          )}
          {problem && <Alert style={{ marginTop: 12 }} type="error" showIcon message={problem} data-testid="import-problem" />}
        </div>
      ) : (
        <Form form={form} layout="vertical" initialValues={{ channel: 'pos', shop: 'store-01' }}>
          <Form.Item name="mapping" label={t('import.mapping')} rules={[{ required: true, message: t('validation.required') }]}>
            <Select loading={mappings.loading} options={(mappings.data ?? []).map((m) => ({ value: m, label: m }))} />
          </Form.Item>
          <Form.Item name="channel" label={t('field.channel')} rules={[{ required: true, message: t('validation.required') }]}>
            <Select options={CHANNELS.map((c) => ({ value: c, label: label('channel', c) }))} />
          </Form.Item>
          <Form.Item name="shop" label={t('field.shop')}><Input /></Form.Item>
          <Form.Item name="file" label={t('import.file')}>
            <Upload maxCount={1} accept=".csv,.xlsx" beforeUpload={(f) => { setFile(f); form.setFields([{ name: 'file', errors: [] }]); return false; }}
              onRemove={() => setFile(null)}>
              <Button icon={<UploadOutlined />}>{t('import.choose')}</Button>
            </Upload>
          </Form.Item>
          {percent !== null && <Progress percent={percent} status={percent < 100 ? 'active' : 'normal'} format={(p) => (p === 100 ? t('import.processing') : `${p}%`)} />}
          {rowErrors.length > 0 && (
            <Alert type="error" message={t('import.badRows', { n: rowErrors.length })}
              description={<ul style={{ maxHeight: 160, overflow: 'auto' }}>{rowErrors.slice(0, 50).map((e, i) => <li key={i}>{typeof e === 'string' ? e : JSON.stringify(e)}</li>)}</ul>} />
          )}
        </Form>
      )}
    </Modal>
  );
}
